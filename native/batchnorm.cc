// Batch normalization on the activation layout (NHWC for 4-D), with separate scale and shift.
// oneDNN reports the biased batch variance; the running variance gets the unbiased one, as in PyTorch.
// The data (x, y, dy, dx) is f32 or bf16, as x is (bf16 training); scale, shift, statistics and their
// gradients are always f32. With `relu`, the training forward is BN followed by ReLU in one pass
// (fuse_norm_relu), which keeps a 1-bit-per-element mask as workspace for the backward.
#include <cmath>
#include <cstring>

#include "batchnorm.h"

namespace residual {
namespace {

using dnnl::normalization_flags;
using dnnl::prop_kind;

struct BnFwd {
  dnnl::batch_normalization_forward::primitive_desc pd;
  Prim prim;
};
struct BnBwd {
  dnnl::batch_normalization_backward::primitive_desc pd;
  Prim prim;
};
Cache<BnFwd>& g_fwd = *new Cache<BnFwd>();  // never destroyed: nothing may run at process exit
Cache<BnBwd>& g_bwd = *new Cache<BnBwd>();  // never destroyed: nothing may run at process exit

int64_t Bits(double v) {
  float f = static_cast<float>(v);
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

normalization_flags ScaleShift() { return normalization_flags::use_scale | normalization_flags::use_shift; }

normalization_flags Flags(bool relu) {
  return relu ? ScaleShift() | normalization_flags::fuse_norm_relu : ScaleShift();
}

memory::desc DataMd(const dims& shape, dt type) { return CanonMdOf(shape, type); }

BnFwd& GetFwd(const dims& shape, dt type, float eps, bool training, bool relu) {
  Key k("bn_fwd");
  k << shape << static_cast<int64_t>(type) << Bits(eps) << static_cast<int64_t>(training) << static_cast<int64_t>(relu);
  return g_fwd.Get(k, [&] {
    memory::desc md = DataMd(shape, type);
    normalization_flags flags = Flags(relu);
    if (!training) flags = flags | normalization_flags::use_global_stats;
    dnnl::batch_normalization_forward::desc d(training ? prop_kind::forward_training : prop_kind::forward_inference, md,
                                              eps, flags);
    dnnl::batch_normalization_forward::primitive_desc pd(d, UserScratchAttr(), Eng());
    RecordImpl(k.s, pd.impl_info_str());
    return BnFwd{pd, MakePrim<decltype(pd), dnnl::batch_normalization_forward>(pd)};
  });
}

// Backward runs with epsilon 0 on variance := 1/invStd^2, which is exactly var + eps of the forward.
// With `relu`, the hint carries fuse_norm_relu so that the backward reads the forward's workspace.
BnBwd& GetBwd(const dims& shape, dt type, bool relu) {
  Key k("bn_bwd");
  k << shape << static_cast<int64_t>(type) << static_cast<int64_t>(relu);
  return g_bwd.Get(k, [&] {
    memory::desc md = DataMd(shape, type);
    auto& f = GetFwd(shape, type, 0.f, true, relu);
    dnnl::batch_normalization_backward::desc d(prop_kind::backward, md, md, 0.f, Flags(relu));
    dnnl::batch_normalization_backward::primitive_desc pd(d, UserScratchAttr(), Eng(), f.pd);
    RecordImpl(k.s, pd.impl_info_str());
    return BnBwd{pd, MakePrim<decltype(pd), dnnl::batch_normalization_backward>(pd)};
  });
}

memory Vec(Tensor* t, int64_t c, const char* what) {
  Require(t->layout == Layout::Plain && t->Numel() == c, std::string(what) + " must have one value per channel");
  return memory(memory::desc({c}, dt::f32, tag::x), Eng(), t->Data());
}

void CheckInput(Tensor* x) {
  Require(x->Rank() >= 2, "input must be [N,C,...]");
  Require(x->Numel() > 0, "input is empty");
}

}  // namespace

BnTrainResult BatchNormTrain(Tensor* x, const BnParams& p, double momentum, double eps, bool relu, Outputs& outs) {
  Tensor *gamma = p.gamma, *beta = p.beta, *rm = p.running_mean, *rv = p.running_var;
  CheckInput(x);
  int64_t c = x->Dim(1);
  Vec(rm, c, "running mean");
  Vec(rv, c, "running var");
  const dt type = x->Type();
  auto& e = GetFwd(x->shape, type, static_cast<float>(eps), true, relu);
  memory::desc ymd = DataMd(x->shape, type);
  Tensor* y = outs.New(x->shape, x->Rank() == 4 ? Layout::NHWC : Layout::Plain, ymd);
  Tensor* mean = outs.Plain({c});
  Tensor* inv = outs.Plain({c});
  Tensor* mask = relu ? outs.New(x->shape, Layout::Opaque, e.pd.workspace_desc()) : nullptr;
  memory var(memory::desc({c}, dt::f32, tag::x), Eng());
  memory mean_m(memory::desc({c}, dt::f32, tag::x), Eng(), mean->Data());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, AsCanonOf(x, type)},
                                       {DNNL_ARG_DST, y->mem},
                                       {DNNL_ARG_MEAN, mean_m},
                                       {DNNL_ARG_VARIANCE, var},
                                       {DNNL_ARG_SCALE, Vec(gamma, c, "gamma")},
                                       {DNNL_ARG_SHIFT, Vec(beta, c, "beta")}};
  if (mask) args[DNNL_ARG_WORKSPACE] = mask->mem;
  e.prim.Exec(std::move(args));
  const float* v = static_cast<const float*>(var.get_data_handle());
  const float* m = mean->Data();
  float* is = inv->Data();
  float* rmean = rm->Data();
  float* prv = rv->Data();
  int64_t count = x->Numel() / c;
  double unbias = count > 1 ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
  for (int64_t i = 0; i < c; ++i) {
    is[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(v[i]) + eps));
    rmean[i] = static_cast<float>((1.0 - momentum) * rmean[i] + momentum * m[i]);
    prv[i] = static_cast<float>((1.0 - momentum) * prv[i] + momentum * v[i] * unbias);
  }
  rm->Touch();
  rv->Touch();
  return {y, mean, inv, mask};
}

Tensor* BatchNormEval(Tensor* x, const BnParams& p, double eps, Outputs& outs) {
  Tensor *gamma = p.gamma, *beta = p.beta, *rm = p.running_mean, *rv = p.running_var;
  CheckInput(x);
  int64_t c = x->Dim(1);
  const dt type = x->Type();
  auto& e = GetFwd(x->shape, type, static_cast<float>(eps), false, false);
  Tensor* y = outs.New(x->shape, x->Rank() == 4 ? Layout::NHWC : Layout::Plain, DataMd(x->shape, type));
  e.prim.Exec({{DNNL_ARG_SRC, AsCanonOf(x, type)},
               {DNNL_ARG_DST, y->mem},
               {DNNL_ARG_MEAN, Vec(rm, c, "running mean")},
               {DNNL_ARG_VARIANCE, Vec(rv, c, "running var")},
               {DNNL_ARG_SCALE, Vec(gamma, c, "gamma")},
               {DNNL_ARG_SHIFT, Vec(beta, c, "beta")}});
  return y;
}

BnGrads BatchNormBackward(Tensor* x, Tensor* gamma, Tensor* mean, Tensor* inv, Tensor* dy, Tensor* relu_mask, Outputs& outs) {
  CheckInput(x);
  Require(dy->shape == x->shape, "dy must have the shape of x");
  int64_t c = x->Dim(1);
  const dt type = x->Type();
  const bool relu = relu_mask != nullptr;
  auto& e = GetBwd(x->shape, type, relu);
  if (relu)
    Require(relu_mask->layout == Layout::Opaque && relu_mask->md == e.pd.workspace_desc(),
            "the ReLU mask does not come from batchNormReluTrain of this input");
  memory var(memory::desc({c}, dt::f32, tag::x), Eng());
  {
    Vec(inv, c, "invStd");
    const float* is = inv->Data();
    float* v = static_cast<float*>(var.get_data_handle());
    for (int64_t i = 0; i < c; ++i) {
      double s = is[i];
      v[i] = static_cast<float>(1.0 / (s * s));
    }
  }
  Tensor* dx = outs.New(x->shape, x->Rank() == 4 ? Layout::NHWC : Layout::Plain, DataMd(x->shape, type));
  Tensor* dgamma = outs.Plain({c});
  Tensor* dbeta = outs.Plain({c});
  memory::desc vmd({c}, dt::f32, tag::x);
  // oneDNN 2.6 lists SHIFT as an input of the backward pass when use_shift is set (it is not read).
  memory shift(vmd, Eng());
  std::memset(shift.get_data_handle(), 0, vmd.get_size());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, AsCanonOf(x, type)},
                                       {DNNL_ARG_MEAN, Vec(mean, c, "mean")},
                                       {DNNL_ARG_VARIANCE, var},
                                       {DNNL_ARG_DIFF_DST, AsCanonOf(dy, type)},
                                       {DNNL_ARG_SCALE, Vec(gamma, c, "gamma")},
                                       {DNNL_ARG_SHIFT, shift},
                                       {DNNL_ARG_DIFF_SRC, dx->mem},
                                       {DNNL_ARG_DIFF_SCALE, memory(vmd, Eng(), dgamma->Data())},
                                       {DNNL_ARG_DIFF_SHIFT, memory(vmd, Eng(), dbeta->Data())}};
  if (relu) args[DNNL_ARG_WORKSPACE] = relu_mask->mem;
  e.prim.Exec(std::move(args));
  return {dx, dgamma, dbeta};
}

}  // namespace residual
