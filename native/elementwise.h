// Elementwise ops on the activation layout: the compute side (elementwise.cc); the Node-API side is
// elementwise_binding.cc. Results are made through `out`.
#pragma once

#include "common.h"

namespace residual {

// a + b, and relu(a + b) in one pass (the residual sum of a block; its backward is ReluBackward
// of the output). bf16 when either input is.
Tensor* Add(Tensor* a, Tensor* b, Outputs& outs);
Tensor* AddRelu(Tensor* a, Tensor* b, Outputs& outs);
// dst += src.
void AddInPlace(Tensor* dst, Tensor* src);
Tensor* Scale(Tensor* x, float s, Outputs& outs);
Tensor* Relu(Tensor* x, Outputs& outs);
// dy where y > 0.
Tensor* ReluBackward(Tensor* y, Tensor* dy, Outputs& outs);

}  // namespace residual
