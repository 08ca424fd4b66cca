// Elementwise ops on the activation layout: add (binary), in-place accumulate, scale, ReLU and its
// backward from the output (eltwise_relu_use_dst_for_bwd).
#include "elementwise.h"

namespace residual {
namespace {

using dnnl::algorithm;
using dnnl::prop_kind;

Key ShapeKey(const char* op, Layout l, const dims& shape) {
  Key k(op);
  k << static_cast<int64_t>(l) << shape;
  return k;
}

memory::desc MdFor(Layout l, const dims& shape) { return l == Layout::NHWC ? NhwcMd(shape) : PlainMd(shape); }

struct BinaryEntry {
  Prim prim;
};
Cache<BinaryEntry>& g_binary = *new Cache<BinaryEntry>();  // never destroyed: nothing may run at process exit

Prim& GetAdd(Layout l, const dims& shape) {
  Key k = ShapeKey("add", l, shape);
  return g_binary.Get(k, [&] {
    memory::desc md = MdFor(l, shape);
    dnnl::binary::desc d(algorithm::binary_add, md, md, md);
    dnnl::binary::primitive_desc pd(d, UserScratchAttr(), Eng());
    RecordImpl(k.s, pd.impl_info_str());
    return BinaryEntry{MakePrim<decltype(pd), dnnl::binary>(pd)};
  }).prim;
}

struct ReluEntry {
  dnnl::eltwise_forward::primitive_desc fwd_pd;
  Prim fwd;
  Prim bwd;
};
Cache<ReluEntry>& g_relu = *new Cache<ReluEntry>();  // never destroyed: nothing may run at process exit

ReluEntry& GetRelu(Layout l, const dims& shape) {
  Key k = ShapeKey("relu", l, shape);
  return g_relu.Get(k, [&] {
    memory::desc md = MdFor(l, shape);
    dnnl::eltwise_forward::desc fd(prop_kind::forward_training, algorithm::eltwise_relu_use_dst_for_bwd, md, 0.f, 0.f);
    dnnl::eltwise_forward::primitive_desc fpd(fd, UserScratchAttr(), Eng());
    dnnl::eltwise_backward::desc bd(algorithm::eltwise_relu_use_dst_for_bwd, md, md, 0.f, 0.f);
    dnnl::eltwise_backward::primitive_desc bpd(bd, UserScratchAttr(), Eng(), fpd);
    RecordImpl(k.s + ":fwd", fpd.impl_info_str());
    RecordImpl(k.s + ":bwd", bpd.impl_info_str());
    return ReluEntry{fpd, MakePrim<decltype(fpd), dnnl::eltwise_forward>(fpd),
                     MakePrim<decltype(bpd), dnnl::eltwise_backward>(bpd)};
  });
}


// Below this many elements a plain loop beats a oneDNN primitive: its OpenMP region costs more than
// the work (microseconds on an idle machine, up to milliseconds when the vCPUs are shared).
constexpr int64_t kSmall = 1 << 16;

const float* F(const memory& m) { return static_cast<const float*>(m.get_data_handle()); }

void SameCount(Tensor* a, Tensor* b) {
  Require(a->shape == b->shape, "tensors must have the same shape");
  Require(a->layout != Layout::Opaque && b->layout != Layout::Opaque, "an opaque tensor (pooling argmax) is not a value tensor");
}

}  // namespace

Tensor* Add(Tensor* a, Tensor* b, Outputs& outs) {
  SameCount(a, b);
  Tensor* y = outs.Canon(a->shape);
  int64_t n = a->Numel();
  if (n == 0) return y;
  if (n <= kSmall) {
    memory am = AsCanon(a), bm = AsCanon(b);
    const float *pa = F(am), *pb = F(bm);
    float* py = y->Data();
    for (int64_t i = 0; i < n; ++i) py[i] = pa[i] + pb[i];
    return y;
  }
  GetAdd(y->layout, a->shape).Exec({{DNNL_ARG_SRC_0, AsCanon(a)}, {DNNL_ARG_SRC_1, AsCanon(b)}, {DNNL_ARG_DST, y->mem}});
  return y;
}

// A plain 4-D accumulator (e.g. from zeros) adopts the activation layout on first use so that later
// accumulations need no reorder.
void AddInPlace(Tensor* dst, Tensor* src) {
  SameCount(dst, src);
  if (dst->Numel() == 0) return;
  if (dst->layout == Layout::Plain && src->layout == Layout::NHWC) dst->Relayout(Layout::NHWC);
  int64_t n = dst->Numel();
  if (n <= kSmall) {
    memory sm = AsLayout(src, dst->layout);
    const float* ps = F(sm);
    float* pd = dst->Data();
    for (int64_t i = 0; i < n; ++i) pd[i] += ps[i];
    dst->Touch();
    return;
  }
  GetAdd(dst->layout, dst->shape).Exec({{DNNL_ARG_SRC_0, dst->mem}, {DNNL_ARG_SRC_1, AsLayout(src, dst->layout)}, {DNNL_ARG_DST, dst->mem}});
  dst->Touch();
}

Tensor* Scale(Tensor* x, float s, Outputs& outs) {
  Require(x->layout != Layout::Opaque, "an opaque tensor (pooling argmax) is not a value tensor");
  Tensor* y = outs.New(x->shape, x->layout, x->md);
  const float* in = x->Data();
  float* out = y->Data();
  int64_t n = x->Numel();
  if (n > kParallelMin) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = in[i] * s;
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = in[i] * s;
  }
  return y;
}

Tensor* Relu(Tensor* x, Outputs& outs) {
  Require(x->layout != Layout::Opaque, "an opaque tensor (pooling argmax) is not a value tensor");
  Tensor* y = outs.Canon(x->shape);
  int64_t n = x->Numel();
  if (n == 0) return y;
  if (n <= kSmall) {
    memory xm = AsCanon(x);
    const float* px = F(xm);
    float* py = y->Data();
    for (int64_t i = 0; i < n; ++i) py[i] = px[i] <= 0.f ? 0.f : px[i];  // keeps NaN, as torch.relu
    return y;
  }
  GetRelu(y->layout, x->shape).fwd.Exec({{DNNL_ARG_SRC, AsCanon(x)}, {DNNL_ARG_DST, y->mem}});
  return y;
}

Tensor* ReluBackward(Tensor* y, Tensor* dy, Outputs& outs) {
  SameCount(y, dy);
  Tensor* dx = outs.Canon(y->shape);
  int64_t n = y->Numel();
  if (n == 0) return dx;
  if (n <= kSmall) {
    memory ym = AsCanon(y), gm = AsCanon(dy);
    const float *py = F(ym), *pg = F(gm);
    float* pd = dx->Data();
    for (int64_t i = 0; i < n; ++i) pd[i] = py[i] > 0.f ? pg[i] : 0.f;
    return dx;
  }
  GetRelu(dx->layout, y->shape).bwd.Exec({{DNNL_ARG_DST, AsCanon(y)}, {DNNL_ARG_DIFF_DST, AsCanon(dy)}, {DNNL_ARG_DIFF_SRC, dx->mem}});
  return dx;
}

}  // namespace residual
