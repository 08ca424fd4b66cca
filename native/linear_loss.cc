// Linear layer (oneDNN inner product; weights reordered through the tensor's derived-copy cache)
// and softmax cross-entropy with label smoothing (a plain loop: [N,K] is tiny next to the convs).
#include <cmath>
#include <vector>

#include "common.h"
#include "napi_args.h"

namespace residual {
namespace {

using dnnl::prop_kind;

struct IpFwd {
  dnnl::inner_product_forward::primitive_desc pd;
  Prim prim;
};
struct IpBwdData {
  dnnl::inner_product_backward_data::primitive_desc pd;
  Prim prim;
};
struct IpBwdWei {
  dnnl::inner_product_backward_weights::primitive_desc pd;
  Prim prim;
};
Cache<IpFwd>& g_fwd = *new Cache<IpFwd>();  // never destroyed: nothing may run at process exit
Cache<IpBwdData>& g_bwd_data = *new Cache<IpBwdData>();  // never destroyed: nothing may run at process exit
Cache<IpBwdWei>& g_bwd_wei = *new Cache<IpBwdWei>();  // never destroyed: nothing may run at process exit

memory::desc Nc(int64_t a, int64_t b) { return memory::desc({a, b}, dt::f32, tag::ab); }
memory::desc Any(int64_t a, int64_t b) { return memory::desc({a, b}, dt::f32, tag::any); }
memory::desc Bias(int64_t m) { return memory::desc({m}, dt::f32, tag::x); }

IpFwd& GetFwd(int64_t n, int64_t k, int64_t m, bool bias) {
  Key key("ip_fwd");
  key << n << k << m << static_cast<int64_t>(bias);
  return g_fwd.Get(key, [&] {
    dnnl::inner_product_forward::desc d(prop_kind::forward_training, Nc(n, k), Any(m, k),
                                        bias ? Bias(m) : memory::desc(), Nc(n, m));
    dnnl::inner_product_forward::primitive_desc pd(d, UserScratchAttr(), Eng());
    RecordImpl(key.s, pd.impl_info_str());
    return IpFwd{pd, MakePrim<decltype(pd), dnnl::inner_product_forward>(pd)};
  });
}

IpBwdData& GetBwdData(int64_t n, int64_t k, int64_t m) {
  Key key("ip_bwd_data");
  key << n << k << m;
  return g_bwd_data.Get(key, [&] {
    auto& f = GetFwd(n, k, m, false);
    dnnl::inner_product_backward_data::desc d(Nc(n, k), Any(m, k), Nc(n, m));
    dnnl::inner_product_backward_data::primitive_desc pd(d, UserScratchAttr(), Eng(), f.pd);
    RecordImpl(key.s, pd.impl_info_str());
    return IpBwdData{pd, MakePrim<decltype(pd), dnnl::inner_product_backward_data>(pd)};
  });
}

IpBwdWei& GetBwdWei(int64_t n, int64_t k, int64_t m, bool bias) {
  Key key("ip_bwd_weights");
  key << n << k << m << static_cast<int64_t>(bias);
  return g_bwd_wei.Get(key, [&] {
    auto& f = GetFwd(n, k, m, false);
    dnnl::inner_product_backward_weights::desc d(Nc(n, k), Any(m, k), bias ? Bias(m) : memory::desc(), Nc(n, m));
    dnnl::inner_product_backward_weights::primitive_desc pd(d, UserScratchAttr(), Eng(), f.pd);
    RecordImpl(key.s, pd.impl_info_str());
    return IpBwdWei{pd, MakePrim<decltype(pd), dnnl::inner_product_backward_weights>(pd)};
  });
}

void CheckLinear(Tensor* x, Tensor* w) {
  Require(x->Rank() == 2, "input must be [N,K]");
  Require(w->Rank() == 2 && w->Dim(1) == x->Dim(1), "weight must be [M,K] with K = input features");
  Require(x->Dim(0) >= 1 && x->Dim(1) >= 1 && w->Dim(0) >= 1, "empty linear layer");
  if (w->layout != Layout::Plain) w->Relayout(Layout::Plain);
}

// linear(x, w, b) -> y
Napi::Value Linear(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* b = ArgTensorOrNull(info, 2);
  CheckLinear(x, w);
  int64_t n = x->Dim(0), k = x->Dim(1), m = w->Dim(0);
  if (b) Require(b->Numel() == m && b->layout == Layout::Plain, "bias must have one value per output feature");
  auto& e = GetFwd(n, k, m, b != nullptr);
  NewT y = NewPlain(info.Env(), {n, m});
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, AsLayout(x, Layout::Plain)},
                                       {DNNL_ARG_WEIGHTS, w->Derived(Nc(m, k), e.pd.weights_desc())},
                                       {DNNL_ARG_DST, y.t->mem}};
  if (b) args[DNNL_ARG_BIAS] = memory(Bias(m), Eng(), b->Data());
  e.prim.Exec(std::move(args));
  return y.obj;
}

// linearBackward(x, w, dy, needInput, needWeight, needBias) -> {dx?, dw?, db?}
Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* dy = ArgTensor(info, 2);
  bool need_x = ArgBool(info, 3), need_w = ArgBool(info, 4), need_b = ArgBool(info, 5);
  CheckLinear(x, w);
  int64_t n = x->Dim(0), k = x->Dim(1), m = w->Dim(0);
  Require(dy->Numel() == n * m && dy->Rank() == 2, "dy must be [N,M]");
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  memory g = AsLayout(dy, Layout::Plain);
  if (need_x) {
    auto& e = GetBwdData(n, k, m);
    NewT dx = NewPlain(env, {n, k});
    e.prim.Exec({{DNNL_ARG_DIFF_DST, g},
                 {DNNL_ARG_WEIGHTS, w->Derived(Nc(m, k), e.pd.weights_desc())},
                 {DNNL_ARG_DIFF_SRC, dx.t->mem}});
    out.Set("dx", dx.obj);
  }
  if (need_w) {
    auto& e = GetBwdWei(n, k, m, need_b);
    NewT dw = NewPlain(env, {m, k});
    bool direct = e.pd.diff_weights_desc() == dw.t->md;
    memory dwm = direct ? dw.t->mem : memory(e.pd.diff_weights_desc(), Eng());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, AsLayout(x, Layout::Plain)}, {DNNL_ARG_DIFF_DST, g}, {DNNL_ARG_DIFF_WEIGHTS, dwm}};
    NewT db{};
    if (need_b) {
      db = NewPlain(env, {m});
      args[DNNL_ARG_DIFF_BIAS] = memory(Bias(m), Eng(), db.t->Data());
    }
    e.prim.Exec(std::move(args));
    if (!direct) Reorder(dwm, dw.t->mem);
    out.Set("dw", dw.obj);
    if (need_b) out.Set("db", db.obj);
  } else if (need_b) {
    NewT db = NewPlain(env, {m});
    const float* gp = static_cast<const float*>(g.get_data_handle());
    std::vector<double> acc(static_cast<size_t>(m), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) acc[j] += gp[i * m + j];
    for (int64_t j = 0; j < m; ++j) db.t->Data()[j] = static_cast<float>(acc[j]);
    out.Set("db", db.obj);
  }
  return out;
}

const int32_t* Labels(const Napi::CallbackInfo& info, size_t i, int64_t n, int64_t k) {
  Require(i < info.Length() && info[i].IsTypedArray(), "labels must be an Int32Array");
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  Require(ta.TypedArrayType() == napi_int32_array, "labels must be an Int32Array");
  Napi::Int32Array a = ta.As<Napi::Int32Array>();
  Require(static_cast<int64_t>(a.ElementLength()) == n, "expected one label per row of logits");
  const int32_t* p = a.Data();
  for (int64_t r = 0; r < n; ++r)
    Require(p[r] >= 0 && p[r] < k, "label " + std::to_string(p[r]) + " is outside [0, " + std::to_string(k) + ")");
  return p;
}

// crossEntropy(logits [N,K], labels, labelSmoothing) -> {loss [], probs [N,K]}
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Tensor* logits = ArgTensor(info, 0);
  Require(logits->Rank() == 2 && logits->Dim(0) >= 1 && logits->Dim(1) >= 1, "logits must be a non-empty [N,K]");
  int64_t n = logits->Dim(0), k = logits->Dim(1);
  const int32_t* labels = Labels(info, 1, n, k);
  double eps = ArgNum(info, 2);
  Napi::Env env = info.Env();
  memory lm = AsLayout(logits, Layout::Plain);
  const float* z = static_cast<const float*>(lm.get_data_handle());
  NewT probs = NewPlain(env, {n, k});
  NewT loss = NewPlain(env, {});
  float* p = probs.t->Data();
  double total = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    const float* zr = z + r * k;
    float* pr = p + r * k;
    double mx = zr[0];
    for (int64_t j = 1; j < k; ++j) mx = std::max(mx, static_cast<double>(zr[j]));
    double sum = 0.0, sum_logits = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      sum += std::exp(zr[j] - mx);
      sum_logits += zr[j];
    }
    double lse = mx + std::log(sum);
    for (int64_t j = 0; j < k; ++j) pr[j] = static_cast<float>(std::exp(zr[j] - lse));
    double nll = lse - zr[labels[r]];
    double smooth = lse - sum_logits / static_cast<double>(k);  // mean over classes of -log p
    total += (1.0 - eps) * nll + eps * smooth;
  }
  loss.t->Data()[0] = static_cast<float>(total / static_cast<double>(n));
  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", loss.obj);
  out.Set("probs", probs.obj);
  return out;
}

// crossEntropyBackward(probs, labels, labelSmoothing, gradScale) -> dlogits
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  Tensor* probs = ArgTensor(info, 0);
  Require(probs->Rank() == 2 && probs->Dim(0) >= 1 && probs->Dim(1) >= 1, "probs must be a non-empty [N,K]");
  int64_t n = probs->Dim(0), k = probs->Dim(1);
  const int32_t* labels = Labels(info, 1, n, k);
  double eps = ArgNum(info, 2);
  double scale = ArgNum(info, 3) / static_cast<double>(n);
  memory pm = AsLayout(probs, Layout::Plain);
  const float* p = static_cast<const float*>(pm.get_data_handle());
  NewT d = NewPlain(info.Env(), {n, k});
  float* g = d.t->Data();
  double off = eps / static_cast<double>(k);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) {
      double target = off + (j == labels[r] ? 1.0 - eps : 0.0);
      g[r * k + j] = static_cast<float>((p[r * k + j] - target) * scale);
    }
  return d.obj;
}

}  // namespace

void RegisterLinearLoss(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "linear", Linear);
  Export(env, exports, "linearBackward", LinearBackward);
  Export(env, exports, "crossEntropy", CrossEntropy);
  Export(env, exports, "crossEntropyBackward", CrossEntropyBackward);
}

}  // namespace residual
