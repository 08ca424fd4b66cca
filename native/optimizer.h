// SGD with PyTorch's semantics (torch.optim.SGD), in place: the compute side (optimizer.cc); the
// Node-API side is optimizer_binding.cc.
#pragma once

#include "common.h"

namespace residual {

struct SgdParams {
  bool first_step = false;  // the momentum buffer starts as the first gradient
  float lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};

// param -= lr * update(grad); `momentum_buffer` may be null when momentum is 0.
void SgdStep(Tensor* param, Tensor* grad, Tensor* momentum_buffer, const SgdParams& s);

}  // namespace residual
