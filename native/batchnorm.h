// Batch normalization on the activation layout: the compute side (batchnorm.cc); the Node-API side
// is batchnorm_binding.cc.
#pragma once

#include "common.h"

namespace residual {

// The per-channel tensors of a BN layer: scale, shift and the running statistics (PyTorch's).
struct BnParams {
  Tensor* gamma = nullptr;
  Tensor* beta = nullptr;
  Tensor* running_mean = nullptr;
  Tensor* running_var = nullptr;
};

struct BnTrainResult {
  Tensor *y, *mean, *inv_std;
  Tensor* relu_mask;  // fused ReLU only: the workspace its backward reads (opaque), else null
};
struct BnGrads {
  Tensor *dx, *dgamma, *dbeta;
};

// Normalizes with the batch statistics and updates the running ones in place; `relu`: then ReLU, fused.
// y and the gradients have x's data type (f32 or bf16).
BnTrainResult BatchNormTrain(Tensor* x, const BnParams& p, double momentum, double eps, bool relu, Outputs& outs);
// Normalizes with the running statistics.
Tensor* BatchNormEval(Tensor* x, const BnParams& p, double eps, Outputs& outs);
// `relu_mask`: the fused forward's workspace (then dy is the gradient of relu(bn(x))), or null.
BnGrads BatchNormBackward(Tensor* x, Tensor* gamma, Tensor* mean, Tensor* inv_std, Tensor* dy, Tensor* relu_mask,
                          Outputs& outs);

}  // namespace residual
