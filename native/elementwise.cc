// Elementwise ops on the activation layout: add (binary), add+ReLU (binary with a ReLU post-op),
// in-place accumulate, scale, ReLU and its backward from the output (eltwise_relu_use_dst_for_bwd).
// Add, add+ReLU, ReLU and the accumulate run in bf16 when an input is bf16 (the activations of bf16
// training), through oneDNN; the plain loops for small tensors are f32 only.
#include "elementwise.h"

namespace residual {
namespace {

using dnnl::algorithm;
using dnnl::prop_kind;

Key ShapeKey(const char* op, Layout l, const dims& shape, dt type) {
  Key k(op);
  k << static_cast<int64_t>(l) << shape << static_cast<int64_t>(type);
  return k;
}

memory::desc MdFor(Layout l, const dims& shape, dt type) {
  return l == Layout::NHWC ? NhwcMd(shape, type) : PlainMd(shape, type);
}

struct BinaryEntry {
  Prim prim;
};
Cache<BinaryEntry>& g_binary = *new Cache<BinaryEntry>();  // never destroyed: nothing may run at process exit

// a + b, then ReLU when `relu` (a post-op: one pass over the data).
Prim& GetAdd(Layout l, const dims& shape, dt type, bool relu = false) {
  Key k = ShapeKey(relu ? "add_relu" : "add", l, shape, type);
  return g_binary.Get(k, [&] {
    memory::desc md = MdFor(l, shape, type);
    dnnl::binary::desc d(algorithm::binary_add, md, md, md);
    dnnl::primitive_attr attr = UserScratchAttr();
    if (relu) {
      dnnl::post_ops po;
      po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(po);
    }
    dnnl::binary::primitive_desc pd(d, attr, Eng());
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

ReluEntry& GetRelu(Layout l, const dims& shape, dt type) {
  Key k = ShapeKey("relu", l, shape, type);
  return g_relu.Get(k, [&] {
    memory::desc md = MdFor(l, shape, type);
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

namespace {

// a + b, or relu(a + b): in bf16 when either is bf16.
Tensor* Sum(Tensor* a, Tensor* b, bool relu, Outputs& outs) {
  SameCount(a, b);
  const dt type = ActivationType({a, b});
  Tensor* y = outs.New(a->shape, a->Rank() == 4 ? Layout::NHWC : Layout::Plain, CanonMdOf(a->shape, type));
  int64_t n = a->Numel();
  if (n == 0) return y;
  if (n <= kSmall && type == dt::f32) {
    memory am = AsCanon(a), bm = AsCanon(b);
    const float *pa = F(am), *pb = F(bm);
    float* py = y->Data();
    if (relu) {
      for (int64_t i = 0; i < n; ++i) {
        float v = pa[i] + pb[i];
        py[i] = v <= 0.f ? 0.f : v;  // keeps NaN, as torch.relu
      }
    } else {
      for (int64_t i = 0; i < n; ++i) py[i] = pa[i] + pb[i];
    }
    return y;
  }
  GetAdd(y->layout, a->shape, type, relu)
      .Exec({{DNNL_ARG_SRC_0, AsCanonOf(a, type)}, {DNNL_ARG_SRC_1, AsCanonOf(b, type)}, {DNNL_ARG_DST, y->mem}});
  return y;
}

}  // namespace

Tensor* Add(Tensor* a, Tensor* b, Outputs& outs) { return Sum(a, b, false, outs); }

Tensor* AddRelu(Tensor* a, Tensor* b, Outputs& outs) { return Sum(a, b, true, outs); }

// A plain 4-D accumulator (e.g. from zeros) adopts the activation layout on first use so that later
// accumulations need no reorder.
void AddInPlace(Tensor* dst, Tensor* src) {
  SameCount(dst, src);
  if (dst->Numel() == 0) return;
  if (dst->layout == Layout::Plain && src->layout == Layout::NHWC) dst->Relayout(Layout::NHWC);
  int64_t n = dst->Numel();
  const dt type = dst->Type();
  if (n <= kSmall && type == dt::f32) {
    memory sm = AsLayout(src, dst->layout);
    const float* ps = F(sm);
    float* pd = dst->Data();
    for (int64_t i = 0; i < n; ++i) pd[i] += ps[i];
    dst->Touch();
    return;
  }
  GetAdd(dst->layout, dst->shape, type)
      .Exec({{DNNL_ARG_SRC_0, dst->mem}, {DNNL_ARG_SRC_1, AsLayoutOf(src, dst->layout, type)}, {DNNL_ARG_DST, dst->mem}});
  dst->Touch();
}

Tensor* Scale(Tensor* x, float s, Outputs& outs) {
  Require(x->layout != Layout::Opaque, "an opaque tensor (pooling argmax) is not a value tensor");
  Tensor* y = outs.New(x->shape, x->layout, x->layout == Layout::NHWC ? NhwcMd(x->shape) : PlainMd(x->shape));
  memory xm = AsLayout(x, x->layout);  // f32 (a bf16 input is widened)
  const float* in = F(xm);
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
  const dt type = x->Type();
  Tensor* y = outs.New(x->shape, x->Rank() == 4 ? Layout::NHWC : Layout::Plain, CanonMdOf(x->shape, type));
  int64_t n = x->Numel();
  if (n == 0) return y;
  if (n <= kSmall && type == dt::f32) {
    memory xm = AsCanon(x);
    const float* px = F(xm);
    float* py = y->Data();
    for (int64_t i = 0; i < n; ++i) py[i] = px[i] <= 0.f ? 0.f : px[i];  // keeps NaN, as torch.relu
    return y;
  }
  GetRelu(y->layout, x->shape, type).fwd.Exec({{DNNL_ARG_SRC, AsCanonOf(x, type)}, {DNNL_ARG_DST, y->mem}});
  return y;
}

// dx has y's data type (the gradient of a bf16 activation is bf16).
Tensor* ReluBackward(Tensor* y, Tensor* dy, Outputs& outs) {
  SameCount(y, dy);
  const dt type = y->Type();
  Tensor* dx = outs.New(y->shape, y->Rank() == 4 ? Layout::NHWC : Layout::Plain, CanonMdOf(y->shape, type));
  int64_t n = y->Numel();
  if (n == 0) return dx;
  if (n <= kSmall && type == dt::f32) {
    memory ym = AsCanon(y), gm = AsCanon(dy);
    const float *py = F(ym), *pg = F(gm);
    float* pd = dx->Data();
    for (int64_t i = 0; i < n; ++i) pd[i] = py[i] > 0.f ? pg[i] : 0.f;
    return dx;
  }
  GetRelu(dx->layout, y->shape, type)
      .bwd.Exec({{DNNL_ARG_DST, AsCanonOf(y, type)}, {DNNL_ARG_DIFF_DST, AsCanonOf(dy, type)}, {DNNL_ARG_DIFF_SRC, dx->mem}});
  return dx;
}

}  // namespace residual
