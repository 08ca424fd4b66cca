// SGD with PyTorch's semantics (torch.optim.SGD), in place, over the raw buffers (optimizer.h). The
// gradient and the momentum buffer follow the parameter's layout (weights are plain; nothing is
// reordered then).
#include "optimizer.h"

namespace residual {

void SgdStep(Tensor* p, Tensor* g, Tensor* buf, const SgdParams& s) {
  const bool first = s.first_step, nesterov = s.nesterov;
  const float lr = s.lr, mom = s.momentum, damp = s.dampening, wd = s.weight_decay;
  Require(p->layout != Layout::Opaque && g->layout != Layout::Opaque, "an opaque tensor is not a parameter");
  Require(g->shape == p->shape, "gradient shape must match the parameter");
  Require(mom == 0.f || buf != nullptr, "momentum needs a momentum buffer");
  if (buf) {
    Require(buf->shape == p->shape && buf->layout != Layout::Opaque, "momentum buffer shape must match the parameter");
    Require(buf != p && buf != g, "momentum buffer must be its own tensor");
    if (buf->layout != p->layout) buf->Relayout(p->layout);
  }
  memory gm = AsLayout(g, p->layout);
  const float* gp = static_cast<const float*>(gm.get_data_handle());
  float* pp = p->Data();
  float* bp = buf && mom != 0.f ? buf->Data() : nullptr;
  int64_t n = p->Numel();
  // OpenMP only pays for large parameters; a parallel region costs more than a small loop.
  float keep = 1.f - damp;
  auto plain = [=](int64_t i) { pp[i] -= lr * (gp[i] + wd * pp[i]); };
  auto with_momentum = [=](int64_t i) {
    float d = gp[i] + wd * pp[i];
    float b = first ? d : mom * bp[i] + keep * d;
    bp[i] = b;
    pp[i] -= lr * (nesterov ? d + mom * b : b);
  };
  if (n > kParallelMin) {
    if (bp == nullptr) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) plain(i);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) with_momentum(i);
    }
  } else if (bp == nullptr) {
    for (int64_t i = 0; i < n; ++i) plain(i);
  } else {
    for (int64_t i = 0; i < n; ++i) with_momentum(i);
  }
  if (bp != nullptr) buf->Touch();
  p->Touch();
}

}  // namespace residual
