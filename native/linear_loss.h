// The linear layer and softmax cross-entropy: the compute side (linear_loss.cc); the Node-API side
// is linear_loss_binding.cc.
#pragma once

#include "common.h"

namespace residual {

// Class indices, one per row of logits (checked by the ops).
struct Labels {
  const int32_t* data = nullptr;
  int64_t count = 0;
};

struct CrossEntropyResult {
  Tensor* loss;   // [] : the mean over the batch
  Tensor* probs;  // [N, K] softmax, for the backward
};

// y = x w^T (+ b); `b` may be null.
Tensor* Linear(Tensor* x, Tensor* w, Tensor* b, Outputs& outs);
Grads LinearBackward(Tensor* x, Tensor* w, Tensor* dy, GradsWanted want, Outputs& outs);
CrossEntropyResult CrossEntropy(Tensor* logits, Labels labels, double label_smoothing, Outputs& outs);
// d loss / d logits, times grad_scale.
Tensor* CrossEntropyBackward(Tensor* probs, Labels labels, double label_smoothing, double grad_scale, Outputs& outs);

}  // namespace residual
