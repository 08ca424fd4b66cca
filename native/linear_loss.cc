// Linear layer (oneDNN inner product; weights reordered through the tensor's derived-copy cache)
// and softmax cross-entropy with label smoothing (a plain loop: [N,K] is tiny next to the convs).
#include <cmath>
#include <vector>

#include "linear_loss.h"

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

const int32_t* CheckLabels(Labels labels, int64_t n, int64_t k) {
  Require(labels.count == n, "expected one label per row of logits");
  const int32_t* p = labels.data;
  for (int64_t r = 0; r < n; ++r)
    Require(p[r] >= 0 && p[r] < k, "label " + std::to_string(p[r]) + " is outside [0, " + std::to_string(k) + ")");
  return p;
}

}  // namespace

Tensor* Linear(Tensor* x, Tensor* w, Tensor* b, Outputs& outs) {
  CheckLinear(x, w);
  int64_t n = x->Dim(0), k = x->Dim(1), m = w->Dim(0);
  if (b) Require(b->Numel() == m && b->layout == Layout::Plain, "bias must have one value per output feature");
  auto& e = GetFwd(n, k, m, b != nullptr);
  Tensor* y = outs.Plain({n, m});
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, AsLayout(x, Layout::Plain)},
                                       {DNNL_ARG_WEIGHTS, w->Derived(Nc(m, k), e.pd.weights_desc())},
                                       {DNNL_ARG_DST, y->mem}};
  if (b) args[DNNL_ARG_BIAS] = memory(Bias(m), Eng(), b->Data());
  e.prim.Exec(std::move(args));
  return y;
}

Grads LinearBackward(Tensor* x, Tensor* w, Tensor* dy, GradsWanted want, Outputs& outs) {
  const bool need_x = want.input, need_w = want.weight, need_b = want.bias;
  CheckLinear(x, w);
  int64_t n = x->Dim(0), k = x->Dim(1), m = w->Dim(0);
  Require(dy->Numel() == n * m && dy->Rank() == 2, "dy must be [N,M]");
  Grads out;
  memory g = AsLayout(dy, Layout::Plain);
  if (need_x) {
    auto& e = GetBwdData(n, k, m);
    Tensor* dx = outs.Plain({n, k});
    e.prim.Exec({{DNNL_ARG_DIFF_DST, g},
                 {DNNL_ARG_WEIGHTS, w->Derived(Nc(m, k), e.pd.weights_desc())},
                 {DNNL_ARG_DIFF_SRC, dx->mem}});
    out.dx = dx;
  }
  if (need_w) {
    auto& e = GetBwdWei(n, k, m, need_b);
    Tensor* dw = outs.Plain({m, k});
    bool direct = e.pd.diff_weights_desc() == dw->md;
    memory dwm = direct ? dw->mem : memory(e.pd.diff_weights_desc(), Eng());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, AsLayout(x, Layout::Plain)}, {DNNL_ARG_DIFF_DST, g}, {DNNL_ARG_DIFF_WEIGHTS, dwm}};
    Tensor* db = nullptr;
    if (need_b) {
      db = outs.Plain({m});
      args[DNNL_ARG_DIFF_BIAS] = memory(Bias(m), Eng(), db->Data());
    }
    e.prim.Exec(std::move(args));
    if (!direct) Reorder(dwm, dw->mem);
    out.dw = dw;
    out.db = db;
  } else if (need_b) {
    Tensor* db = outs.Plain({m});
    const float* gp = static_cast<const float*>(g.get_data_handle());
    std::vector<double> acc(static_cast<size_t>(m), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) acc[j] += gp[i * m + j];
    for (int64_t j = 0; j < m; ++j) db->Data()[j] = static_cast<float>(acc[j]);
    out.db = db;
  }
  return out;
}

CrossEntropyResult CrossEntropy(Tensor* logits, Labels label_list, double eps, Outputs& outs) {
  Require(logits->Rank() == 2 && logits->Dim(0) >= 1 && logits->Dim(1) >= 1, "logits must be a non-empty [N,K]");
  int64_t n = logits->Dim(0), k = logits->Dim(1);
  const int32_t* labels = CheckLabels(label_list, n, k);
  memory lm = AsLayout(logits, Layout::Plain);
  const float* z = static_cast<const float*>(lm.get_data_handle());
  Tensor* probs = outs.Plain({n, k});
  Tensor* loss = outs.Plain({});
  float* p = probs->Data();
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
  loss->Data()[0] = static_cast<float>(total / static_cast<double>(n));
  return {loss, probs};
}

Tensor* CrossEntropyBackward(Tensor* probs, Labels label_list, double eps, double grad_scale, Outputs& outs) {
  Require(probs->Rank() == 2 && probs->Dim(0) >= 1 && probs->Dim(1) >= 1, "probs must be a non-empty [N,K]");
  int64_t n = probs->Dim(0), k = probs->Dim(1);
  const int32_t* labels = CheckLabels(label_list, n, k);
  double scale = grad_scale / static_cast<double>(n);
  memory pm = AsLayout(probs, Layout::Plain);
  const float* p = static_cast<const float*>(pm.get_data_handle());
  Tensor* d = outs.Plain({n, k});
  float* g = d->Data();
  double off = eps / static_cast<double>(k);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) {
      double target = off + (j == labels[r] ? 1.0 - eps : 0.0);
      g[r * k + j] = static_cast<float>((p[r * k + j] - target) * scale);
    }
  return d;
}

}  // namespace residual
