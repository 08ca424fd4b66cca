// Convolution forward, backward-data and backward-weights: the compute side (conv.cc); the
// Node-API side is conv_binding.cc.
#pragma once

#include "common.h"

namespace residual {

// A convolution's geometry and precision, as PyTorch's Conv2d takes them (the kernel size comes
// from the weights).
struct ConvParams {
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  bool bf16 = false;  // read src/weights/diff_dst as bf16 (f32 accumulation and outputs)
};

// y = conv(x, w) (+ b); `b` may be null.
Tensor* Conv2d(Tensor* x, Tensor* w, Tensor* b, const ConvParams& p, Outputs& outs);
Grads Conv2dBackward(Tensor* x, Tensor* w, Tensor* dy, const ConvParams& p, GradsWanted want, Outputs& outs);
// Let oneDNN choose the activation layout of every convolution (experiments), or keep NHWC.
void SetConvLayoutAny(bool any);

}  // namespace residual
