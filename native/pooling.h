// Max, average and global average pooling on NHWC: the compute side (pooling.cc); the Node-API side
// is pooling_binding.cc.
#pragma once

#include "common.h"

namespace residual {

// A pooling window, as PyTorch's MaxPool2d/AvgPool2d take it.
struct PoolParams {
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  bool ceil = false;
};

struct MaxPoolResult {
  Tensor* y;
  Tensor* argmax;  // oneDNN's workspace, an opaque tensor
};

MaxPoolResult MaxPool2d(Tensor* x, const PoolParams& p, Outputs& outs);
Tensor* MaxPool2dBackward(Tensor* x, Tensor* argmax, Tensor* dy, const PoolParams& p, Outputs& outs);
Tensor* AvgPool2d(Tensor* x, const PoolParams& p, bool count_include_pad, Outputs& outs);
Tensor* AvgPool2dBackward(Tensor* dy, const dims& input_shape, const PoolParams& p, bool count_include_pad, Outputs& outs);
Tensor* GlobalAvgPool(Tensor* x, Outputs& outs);
Tensor* GlobalAvgPoolBackward(Tensor* dy, const dims& input_shape, Outputs& outs);

}  // namespace residual
