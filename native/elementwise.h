// Elementwise ops on the activation layout: the compute side (elementwise.cc); the Node-API side is
// elementwise_binding.cc. Results are made through `out`.
#pragma once

#include "common.h"

namespace residual {

Tensor* Add(Tensor* a, Tensor* b, Outputs& outs);
// dst += src.
void AddInPlace(Tensor* dst, Tensor* src);
Tensor* Scale(Tensor* x, float s, Outputs& outs);
Tensor* Relu(Tensor* x, Outputs& outs);
// dy where y > 0.
Tensor* ReluBackward(Tensor* y, Tensor* dy, Outputs& outs);

}  // namespace residual
