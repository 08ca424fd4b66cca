// The compiled inference plan: a whole network (BN already folded into the conv weights by the
// caller, in float64) run as a fixed list of oneDNN primitives over preallocated buffers.
//
// - Convolutions are forward_inference with weights `any` (reordered once, at build); ReLU is an
//   eltwise post-op; a residual sum is a `sum` post-op followed by ReLU, on a dst buffer that already
//   holds the shortcut (the block input itself for an identity shortcut).
// - Activation layout per program (Plan::Choose): NHWC (brgconv kernels) or nChw16c (jit kernels,
//   Winograd for the wide 3x3 stride-1 f32 convs, the first conv reading the caller's NCHW array).
//   Each buffer's value carries its format; a step that wants another one gets a reorder.
// - Max pool, global average pool and the inner-product head are inference primitives too; the
//   option-A shortcut (CIFAR) is a strided copy.
// - int8 (post-training static quantization): every conv but those marked `keep` runs u8/s8 x s8 with
//   f32 accumulation scaled back per output channel (weights quantized here, symmetric per channel);
//   each value carries one scale (x = scale * q), the calibrated range of its producer, so a value
//   is quantized, dequantized or read as it is by the reorders between steps. Max and average pools
//   and the option-A copy work on int8 values as they are; the global pool and the head run in f32.
// - The plan's output is its last op's value, handed back as f32 NCHW ([N, C] for the head or the
//   global pool): copied out when it already has those bytes, else reordered into the caller's
//   array. So a plan may stop before the head (pooled features, a stage's map) at no extra cost.
// - Primitives for the plan's batch size are built at creation; a smaller batch gets its own set on
//   first use, over the same buffers (a value larger than its buffer would get a temporary).
// - Execution is sequential under the global lock, with the shared user scratchpad.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "allocator.h"
#include "plan_impl.h"

namespace residual {

using dnnl::algorithm;
using dnnl::prop_kind;

const char* LayoutName(ActLayout l) {
  return l == ActLayout::Nhwc ? "nhwc" : l == ActLayout::Blocked ? "blocked" : "any";
}

Plan::~Plan() {
  for (float* b : bufs) std::free(b);
  for (auto& sp : spares) std::free(sp.first);
  ReportExternal(-static_cast<int64_t>(bytes));
}

void Plan::Choose(int64_t n) {
  (void)n;
  double all = 0, eligible = 0;
  int64_t widest = 0;
  for (const OpDesc& op : ops) {
    if (op.kind != OpKind::Conv) continue;
    double macs = static_cast<double>(op.out.Size()) * (op.in.c / op.groups) * op.kh * op.kw;
    all += macs;
    if (WinogradEligible(op)) eligible += macs;
    widest = std::max(widest, op.out.c);
  }
  // Measured (BENCHMARKS.md): ImageNet-width nets (ResNet/ResNeXt-50, f32 and bf16) run as fast or
  // faster blocked, and f32 nets with enough wide 3x3 stride-1 convs get Winograd there; the narrow
  // CIFAR nets (16-64 channels) run NHWC.
  const bool wino = act == dt::f32 && !int8 && eligible >= 0.2 * all;
  // int8: oneDNN's VNNI kernels (brgconv and jit x8s8s32x) all take NHWC.
  layout = (widest >= 256 || wino) && !int8 ? ActLayout::Blocked : ActLayout::Nhwc;
  if (want_layout == "nhwc") layout = ActLayout::Nhwc;
  if (want_layout == "blocked") layout = ActLayout::Blocked;
  if (want_layout == "any") layout = ActLayout::Any;
  winograd = layout == ActLayout::Blocked && (want_winograd.empty() ? wino : want_winograd == "1");
  strided_nhwc = want_strided == "nhwc";
}

bool Plan::WinogradEligible(const OpDesc& op) {
  return op.kind == OpKind::Conv && op.kh == 3 && op.kw == 3 && op.sh == 1 && op.sw == 1 && op.dh == 1 &&
         op.dw == 1 && op.groups == 1 && op.in.c >= 64 && op.out.c >= 64 &&
         (op.in.c >= 128 || op.out.h * op.out.w >= 28 * 28);
}

memory::desc Plan::Pref(const Shape3& s, int64_t n) const {
  switch (layout) {
    case ActLayout::Blocked: return Md(s, n, act, s.c < 16 ? tag::nchw : tag::nChw16c);
    case ActLayout::Any: return Md(s, n, act, tag::any);
    default: return Md(s, n, act, tag::nhwc);
  }
}

void Plan::Impl(const std::string& name, int64_t n, const char* impl) {
  if (programs.empty() || n == max_batch) impls.emplace_back(name, impl ? impl : "");
  RecordImpl("plan:" + name + ":n" + std::to_string(n), impl);
}

memory Plan::Temp(const memory::desc& md) {
  void* best = nullptr;
  size_t best_size = 0;
  for (const auto& sp : spares)
    if (sp.second >= md.get_size() && (!best || sp.second < best_size) && !Live(sp.first)) best = sp.first, best_size = sp.second;
  if (best) return memory(md, Eng(), best);
  size_t size = (md.get_size() + 4095) / 4096 * 4096;
  void* ptr = std::aligned_alloc(4096, size);
  if (!ptr) throw std::bad_alloc();
  spares.emplace_back(ptr, size);
  bytes += size;
  ReportExternal(static_cast<int64_t>(size));
  return memory(md, Eng(), ptr);
}

memory Plan::Need(Program& p, int buf, const memory::desc& want, const std::string& name, int64_t n) {
  memory have = val_[buf];
  if (!have) throw OpError("buffer " + std::to_string(buf) + " is read before anything writes it");
  if (have.get_desc() == want) return have;
  for (const memory& c : copies_[buf])
    if (c.get_desc() == want) return c;
  memory t = Temp(want);
  copies_[buf].push_back(t);
  // Between an int8 form and a float one, the reorder (de)quantizes with the buffer's scale.
  dnnl::primitive_attr attr;
  const bool from8 = IsInt8(DtOf(have)), to8 = IsInt8(want.data_type());
  if (from8 != to8) {
    if (!(scale_[buf] > 0)) throw OpError(name + ": this value has no calibrated int8 scale (recalibrate the plan)");
    attr.set_output_scales(0, {from8 ? scale_[buf] : 1.f / scale_[buf]});
  }
  dnnl::reorder::primitive_desc rpd(have, t, attr);
  Impl(name + ":reorder", n, rpd.impl_info_str());
  auto re = std::make_shared<dnnl::reorder>(rpd);
  p.steps.push_back([=]() mutable { re->execute(Strm(), have, t); });
  return t;
}

memory Plan::Out(int buf, const memory::desc& md) {
  memory m = md.get_size() <= Capacity(buf) ? memory(md, Eng(), bufs[buf]) : Temp(md);
  val_[buf] = m;
  copies_[buf].clear();
  return m;
}

bool Plan::Live(const void* ptr) const {
  for (size_t b = 0; b < val_.size(); ++b) {
    if (val_[b] && val_[b].get_data_handle() == ptr) return true;
    for (const memory& c : copies_[b])
      if (c.get_data_handle() == ptr) return true;
  }
  return false;
}

memory Plan::Act(Program& p, int buf, const Shape3& s, int64_t n, const std::string& name) {
  memory have = val_[buf];
  if (have && have.get_desc().data_type() == act) return have;
  memory::desc want = Pref(s, n);
  if (layout == ActLayout::Any) want = Md(s, n, act, tag::nhwc);
  return Need(p, buf, want, name, n);
}

memory Plan::Ready(OpDesc& op, const memory::desc& plain, const memory::desc& want) {
  const bool q = plain.data_type() == dt::s8;  // int8 weights come from qweight
  void* data = q ? static_cast<void*>(op.qweight.data()) : static_cast<void*>(op.weight.data());
  if (!op.wei) {
    memory user(plain, Eng(), data);
    op.wei = memory(want, Eng());
    Reorder(user, op.wei);
    Strm().wait();
    bytes += want.get_size();
    ReportExternal(static_cast<int64_t>(want.get_size()));
    if (want.data.format_kind == dnnl_format_kind_wino) {
      bytes += plain.get_size();
      ReportExternal(static_cast<int64_t>(plain.get_size()));
    } else if (q) {
      op.qweight.clear();
      op.qweight.shrink_to_fit();
    } else {
      op.weight.clear();
      op.weight.shrink_to_fit();
    }
    return op.wei;
  }
  if (op.wei.get_desc() == want) return op.wei;
  for (const memory& w : op.wei_other)
    if (w.get_desc() == want) return w;
  memory m(want, Eng());  // another batch size chose another weight format: one copy per format
  op.wei_other.push_back(m);
  if (q ? !op.qweight.empty() : !op.weight.empty())
    Reorder(memory(plain, Eng(), data), m);
  else
    Reorder(op.wei, m);
  Strm().wait();
  bytes += want.get_size();
  ReportExternal(static_cast<int64_t>(want.get_size()));
  return m;
}

bool Plan::Stored(const OpDesc& op, const memory::desc& md) {
  if (op.wei && op.wei.get_desc() == md) return true;
  for (const memory& w : op.wei_other)
    if (w.get_desc() == md) return true;
  return false;
}

memory Plan::Bias(OpDesc& op, int64_t len) {
  if (!op.bia) {
    op.bia = memory(memory::desc({len}, dt::f32, tag::x), Eng());
    std::memcpy(op.bia.get_data_handle(), op.bias.data(), len * sizeof(float));
    op.bias.clear();
    op.bias.shrink_to_fit();
  }
  return op.bia;
}

void Plan::AddConv(Program& p, OpDesc& op, int64_t n) {
  if (int8 && !op.keep) return AddConvInt8(p, op, n);
  if (Narrow(op)) return AddNarrowGroupedConv(p, op, n);
  const bool grouped = op.groups > 1;
  dims wd = grouped ? dims{op.groups, op.out.c / op.groups, op.in.c / op.groups, op.kh, op.kw}
                    : dims{op.out.c, op.in.c, op.kh, op.kw};
  memory::desc wplain(wd, dt::f32, grouped ? tag::goihw : tag::oihw);
  dnnl::post_ops po;
  if (op.sum) po.append_sum(1.f);
  if (op.relu) po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr = UserScratchAttr();
  attr.set_post_ops(po);
  auto desc = [&](const memory::desc& src, const memory::desc& dst, algorithm alg) {
    return dnnl::convolution_forward::desc(prop_kind::forward_inference, alg, src, memory::desc(wd, act, tag::any),
                                           memory::desc({op.out.c}, dt::f32, tag::x), dst, {op.sh, op.sw},
                                           {op.dh - 1, op.dw - 1}, {op.ph, op.pw}, {op.ph, op.pw});
  };
  auto make = [&](const memory::desc& src, const memory::desc& dst, algorithm alg) {
    return dnnl::convolution_forward::primitive_desc(desc(src, dst, alg), attr, Eng());
  };
  auto ref = [](const dnnl::convolution_forward::primitive_desc& pd) {
    return !pd || std::strncmp(pd.impl_info_str(), "ref", 3) == 0;
  };
  // The plan's layout for src and dst; a summing conv writes where the shortcut already is, in
  // its format. Should oneDNN have no kernel or only a reference one for that, let it choose
  // the layouts and pay a reorder on each side.
  memory::desc src_md = Pref(op.in, n), dst_md = Pref(op.out, n);
  if (layout == ActLayout::Blocked && strided_nhwc && op.kh == 3 && op.kw == 3 && (op.sh > 1 || op.sw > 1) && !grouped) {
    src_md = Md(op.in, n, act, tag::nhwc);  // brgconv beats the blocked jit kernel on strided 3x3s, reorders included
    dst_md = Md(op.out, n, act, tag::nhwc);
  }
  if (layout == ActLayout::Blocked && op.in.c < 16 && val_[op.src] && val_[op.src].get_desc().data_type() == act)
    src_md = val_[op.src].get_desc();  // (the first conv: NCHW as it comes)
  if (op.sum && val_[op.dst]) dst_md = val_[op.dst].get_desc();
  dnnl::convolution_forward::primitive_desc pd;
  if (winograd && act == dt::f32 && layout == ActLayout::Blocked && WinogradEligible(op)) {
    try {
      pd = make(src_md, dst_md, algorithm::convolution_winograd);
    } catch (const dnnl::error&) {
    }
  }
  if (!pd) {
    try {
      pd = make(src_md, dst_md, algorithm::convolution_direct);
    } catch (const dnnl::error&) {
    }
  }
  if (ref(pd)) {
    memory::desc any_src = Md(op.in, n, act, tag::any), any_dst = Md(op.out, n, act, tag::any);
    auto alt = make(any_src, any_dst, algorithm::convolution_direct);
    if (!pd || !ref(alt)) pd = alt;
  }
  // Winograd weights are blocked for the batch size (up to 4x the direct ones), so every batch size
  // would want its own copy. Batch 1 (latency) gets one; another batch size takes a Winograd
  // kernel whose weights are already stored, else runs direct (one direct copy shared by all).
  if (op.wei && n != 1 && pd.weights_desc().data.format_kind == dnnl_format_kind_wino && !Stored(op, pd.weights_desc())) {
    auto d = desc(pd.src_desc(), pd.dst_desc(), algorithm::convolution_winograd);  // alive while iterating
    dnnl::convolution_forward::primitive_desc it(d, attr, Eng());
    bool found = false;
    while (!found && it.next_impl() && !ref(it)) found = Stored(op, it.weights_desc());
    if (found) {
      pd = it;
    } else {
      auto direct = make(pd.src_desc(), pd.dst_desc(), algorithm::convolution_direct);
      if (!ref(direct)) pd = direct;
    }
  }
  Impl(op.name, n, pd.impl_info_str());
  auto prim = std::make_shared<Prim>(MakePrim<decltype(pd), dnnl::convolution_forward>(pd));
  memory wei = Ready(op, wplain, pd.weights_desc());
  memory bias = Bias(op, op.out.c);
  memory src = Need(p, op.src, pd.src_desc(), op.name + ".src", n);
  memory dst;
  if (op.sum) {
    dst = Need(p, op.dst, pd.dst_desc(), op.name + ".shortcut", n);
    val_[op.dst] = dst;
    copies_[op.dst].clear();
  } else {
    dst = Out(op.dst, pd.dst_desc());
  }
  p.steps.push_back([=]() {
    prim->Exec({{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  });
}

void Plan::AddPool(Program& p, OpDesc& op, int64_t n, bool global) {
  // An int8 value is pooled as it is (same scale), except by the global pool, which feeds the f32 head.
  const bool q = !global && val_[op.src] && IsInt8(DtOf(val_[op.src]));
  memory src = q ? val_[op.src] : Act(p, op.src, op.in, n, op.name + ".src");
  int64_t kh = global ? op.in.h : op.kh, kw = global ? op.in.w : op.kw;
  int64_t sh = global ? op.in.h : op.sh, sw = global ? op.in.w : op.sw;
  int64_t ph = global ? 0 : op.ph, pw = global ? 0 : op.pw;
  int64_t prh = std::max(ph, (op.out.h - 1) * sh + kh - op.in.h - ph);
  int64_t prw = std::max(pw, (op.out.w - 1) * sw + kw - op.in.w - pw);
  const bool avg = global || op.kind == OpKind::AvgPool;
  dnnl::pooling_forward::desc d(prop_kind::forward_inference, avg ? algorithm::pooling_avg_exclude_padding : algorithm::pooling_max,
                                src.get_desc(), Md(op.out, n, DtOf(src), tag::any), {sh, sw}, {kh, kw}, {ph, pw}, {prh, prw});
  dnnl::pooling_forward::primitive_desc pd(d, UserScratchAttr(), Eng());
  Impl(op.name, n, pd.impl_info_str());
  auto prim = std::make_shared<Prim>(MakePrim<decltype(pd), dnnl::pooling_forward>(pd));
  memory dst = Out(op.dst, pd.dst_desc());
  if (q) scale_[op.dst] = scale_[op.src], signed_[op.dst] = signed_[op.src];
  p.steps.push_back([=]() { prim->Exec({{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}); });
}

void Plan::AddLinear(Program& p, OpDesc& op, int64_t n) {
  // [N, C, 1, 1] in NCHW, NHWC or (C % 16 == 0) nChw16c is the same bytes as [N, C] row-major.
  int64_t k = op.in.Size(), m = op.out.c;
  memory have = Act(p, op.src, op.in, n, op.name + ".src");
  bool flat = false;
  for (tag t : {tag::nchw, tag::nhwc, tag::nChw16c}) flat = flat || have.get_desc() == Md(op.in, n, act, t);
  if (!flat || op.in.h * op.in.w != 1) have = Need(p, op.src, Md(op.in, n, act, tag::nchw), op.name + ".src", n);
  memory src(memory::desc({n, k}, act, tag::ab), Eng(), have.get_data_handle());
  memory dst = Out(op.dst, memory::desc({n, m}, dt::f32, tag::ab));  // logits in f32 whatever the dtype
  if (dst.get_data_handle() != bufs[op.dst]) throw OpError("the logits do not fit their buffer");
  dnnl::inner_product_forward::desc d(prop_kind::forward_inference, src.get_desc(), memory::desc({m, k}, act, tag::any),
                                      memory::desc({m}, dt::f32, tag::x), dst.get_desc());
  dnnl::inner_product_forward::primitive_desc pd(d, UserScratchAttr(), Eng());
  Impl(op.name, n, pd.impl_info_str());
  auto prim = std::make_shared<Prim>(MakePrim<decltype(pd), dnnl::inner_product_forward>(pd));
  memory wei = Ready(op, memory::desc({m, k}, dt::f32, tag::ab), pd.weights_desc());
  memory bias = Bias(op, m);
  p.steps.push_back([=]() {
    (void)have;  // keeps the memory that `src` views alive
    prim->Exec({{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  });
}

void Plan::AddShortcutA(Program& p, OpDesc& op, int64_t n) {
  const bool blocked = layout == ActLayout::Blocked && op.in.c % 16 == 0 && op.out.c % 16 == 0;
  const tag f = blocked ? tag::nChw16c : tag::nhwc;
  const bool q = val_[op.src] && IsInt8(DtOf(val_[op.src]));  // an int8 value is copied as it is
  const dt t = q ? DtOf(val_[op.src]) : act;
  memory src = Need(p, op.src, Md(op.in, n, t, f), op.name + ".src", n);
  memory dst = Out(op.dst, Md(op.out, n, t, f));
  if (q) scale_[op.dst] = scale_[op.src], signed_[op.dst] = signed_[op.src];
  const char* in = static_cast<const char*>(src.get_data_handle());
  char* out = static_cast<char*>(dst.get_data_handle());
  Shape3 a = op.in, b = op.out;
  int64_t s = op.sh, before = (b.c - a.c) / 2, e = static_cast<int64_t>(q ? 1 : esize);
  p.steps.push_back([=]() {
    (void)src, (void)dst;
    std::memset(out, 0, static_cast<size_t>(n * b.Size() * e));  // zero bits are 0.0 in f32, bf16 and int8
    if (!blocked) {
      for (int64_t k = 0; k < n; ++k)
        for (int64_t i = 0; i < b.h; ++i)
          for (int64_t j = 0; j < b.w; ++j)
            std::memcpy(out + (((k * b.h + i) * b.w + j) * b.c + before) * e, in + ((k * a.h + i * s) * a.w + j * s) * a.c * e,
                        static_cast<size_t>(a.c * e));
      return;
    }
    // nChw16c: element (k, c, i, j) at (((k * C/16 + c/16) * H + i) * W + j) * 16 + c % 16.
    for (int64_t k = 0; k < n; ++k)
      for (int64_t c = 0; c < a.c; ++c) {
        int64_t oc = c + before;
        for (int64_t i = 0; i < b.h; ++i)
          for (int64_t j = 0; j < b.w; ++j)
            std::memcpy(out + ((((k * (b.c / 16) + oc / 16) * b.h + i) * b.w + j) * 16 + oc % 16) * e,
                        in + ((((k * (a.c / 16) + c / 16) * a.h + i * s) * a.w + j * s) * 16 + c % 16) * e, static_cast<size_t>(e));
      }
  });
}

Program Plan::Build(int64_t n) {
  Choose(n);
  Program p;
  p.user_in = memory(Md(input, n, dt::f32, tag::nchw), Eng(), nullptr);
  val_.assign(bufs.size(), memory());
  copies_.assign(bufs.size(), {});
  scale_.assign(bufs.size(), 0.f);
  signed_.assign(bufs.size(), 1);
  val_[input_buf] = p.user_in;  // the caller's array; the first step that wants another format reorders it
  for (OpDesc& op : ops) {
    try {
      switch (op.kind) {
        case OpKind::Conv: AddConv(p, op, n); break;
        case OpKind::MaxPool:
        case OpKind::AvgPool: AddPool(p, op, n, false); break;
        case OpKind::GlobalAvgPool: AddPool(p, op, n, true); break;
        case OpKind::Linear: AddLinear(p, op, n); break;
        case OpKind::ShortcutA: AddShortcutA(p, op, n); break;
      }
    } catch (const dnnl::error& e) {
      throw OpError("step " + op.name + " (batch " + std::to_string(n) + ", " + (int8 ? "int8" : act == dt::bf16 ? "bf16" : "f32") +
                    ", " + LayoutName(layout) + " layout): oneDNN error: " + e.what());
    }
    // A float value's int8 form, should a later step want one, uses its op's calibrated range.
    if (!IsInt8(DtOf(val_[op.dst]))) scale_[op.dst] = op.qscale, signed_[op.dst] = op.qsigned;
    p.marks.emplace_back(p.steps.size(), val_[op.dst]);
  }
  AddOutput(p, n);
  val_.clear();
  copies_.clear();
  scale_.clear();
  signed_.clear();
  return p;
}

void Plan::AddOutput(Program& p, int64_t n) {
  memory have = val_[output_buf];
  if (!have) throw OpError("the plan's output buffer is never written");
  const memory::desc d = have.get_desc();
  bool flat = d == Md(output, n, dt::f32, tag::nchw);
  if (output.h * output.w == 1) {
    flat = flat || d == memory::desc({n, output.c}, dt::f32, tag::ab) || d == Md(output, n, dt::f32, tag::nhwc) ||
           (output.c % 16 == 0 && d == Md(output, n, dt::f32, tag::nChw16c));
  }
  if (flat) {
    p.result = have;
    return;
  }
  p.user_out = memory(Md(output, n, dt::f32, tag::nchw), Eng(), nullptr);
  dnnl::primitive_attr attr;
  if (IsInt8(d.data_type())) attr.set_output_scales(0, {scale_[output_buf]});  // dequantized
  dnnl::reorder::primitive_desc rpd(have, p.user_out, attr);
  Impl("output:reorder", n, rpd.impl_info_str());
  auto re = std::make_shared<dnnl::reorder>(rpd);
  memory out = p.user_out;
  p.steps.push_back([=]() mutable { re->execute(Strm(), have, out); });
}

void PlanDeleter::operator()(Plan* p) const { delete p; }

PlanPtr BuildPlan(PlanSpec spec) {
  Require(spec.max_batch >= 1, "maxBatch must be at least 1");
  Require(spec.buffers >= 1 && spec.buffers < 1024, "bad buffer count");
  Require(!spec.ops.empty(), "a plan needs at least one op");
  if (spec.dtype == PlanDtype::Int8) {
    // Without VNNI, oneDNN's int8 kernels emulate the u8 x s8 dot products (and saturate them).
    const int vnni = static_cast<int>(dnnl::cpu_isa::avx512_core_vnni);
    Require((static_cast<int>(dnnl::get_effective_cpu_isa()) & vnni) == vnni,
            "int8 needs a CPU with AVX512-VNNI (or AMX); this one does not have them (use f32 or bf16)");
  }
  if (spec.dtype == PlanDtype::Bf16) {
    // oneDNN runs bf16 convolutions fast only with AVX512-BF16 (or AMX); elsewhere it would emulate.
    const int bf16 = static_cast<int>(dnnl::cpu_isa::avx512_core_bf16);  // ISA values are nested bit sets
    Require((static_cast<int>(dnnl::get_effective_cpu_isa()) & bf16) == bf16,
            "bf16 needs a CPU with AVX512-BF16 or AMX; this one does not have them (use f32)");
  }
  PlanPtr plan(new Plan());
  plan->input = spec.input;
  plan->max_batch = spec.max_batch;
  plan->input_buf = spec.input_buf;
  plan->int8 = spec.dtype == PlanDtype::Int8;
  if (spec.dtype == PlanDtype::Bf16) plan->act = dt::bf16, plan->esize = 2;
  plan->want_layout = spec.layout;
  plan->want_winograd = spec.winograd;
  plan->want_strided = spec.strided;
  plan->want_grouped = spec.grouped;
  const int64_t nbuf = spec.buffers;
  plan->buf_floats.assign(nbuf, 0);
  auto use = [&](int b, const Shape3& s) {
    Require(b >= 0 && b < nbuf, "buffer index out of range");
    plan->buf_floats[b] = std::max(plan->buf_floats[b], (s.c + 15) / 16 * 16 * s.h * s.w);  // room for nChw16c padding
  };
  use(plan->input_buf, plan->input);
  for (const OpDesc& op : spec.ops) use(op.src, op.in), use(op.dst, op.out);
  plan->ops = std::move(spec.ops);
  // The last op's value is the output: the linear head's logits, or the features a plan stops at.
  const OpDesc& last = plan->ops.back();
  plan->output_buf = last.dst;
  plan->output = last.out;
  for (int64_t b = 0; b < nbuf; ++b) {
    size_t n = static_cast<size_t>(std::max<int64_t>(plan->buf_floats[b], 1) * plan->max_batch) * sizeof(float);
    n = (n + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(4096, n);
    if (!p) throw std::bad_alloc();
    plan->bufs.push_back(static_cast<float*>(p));
    plan->bytes += n;
    ReportExternal(static_cast<int64_t>(n));
  }
  plan->Get(plan->max_batch);  // build everything (weights reordered once) for the full batch now
  return plan;
}

PlanFacts FactsOf(const Plan& plan) {
  return {plan.input, plan.output, plan.max_batch, plan.act == dt::f32 && !plan.int8, plan.bytes, &plan.impls};
}

void RunPlan(Plan& plan, const float* x, int64_t n, float* out) {
  Program& p = plan.Get(n);
  p.user_in.set_data_handle(const_cast<float*>(x));
  if (p.user_out) p.user_out.set_data_handle(out);
  for (auto& step : p.steps) step();
  Strm().wait();
  if (p.result) std::memcpy(out, p.result.get_data_handle(), static_cast<size_t>(n * plan.output.Size()) * sizeof(float));
}

std::vector<float> CalibratePlan(Plan& plan, const float* x, int64_t n) {
  Require(plan.act == dt::f32 && !plan.int8, "calibration runs an f32 plan");
  Program& p = plan.Get(n);
  p.user_in.set_data_handle(const_cast<float*>(x));
  std::vector<float> scratch(static_cast<size_t>(n * plan.output.Size()));
  if (p.user_out) p.user_out.set_data_handle(scratch.data());
  std::vector<float> ranges(p.marks.size() * 2);
  size_t done = 0;
  for (size_t k = 0; k < p.marks.size(); ++k) {
    for (; done < p.marks[k].first; ++done) p.steps[done]();
    Strm().wait();
    const memory& m = p.marks[k].second;
    Require(m.get_desc().data_type() == dt::f32, "calibration: an op's output is not f32");
    // Blocked layouts pad channels with zeros: harmless, a range always includes 0 here (ReLU, sums).
    const float* v = static_cast<const float*>(m.get_data_handle());
    const size_t count = m.get_desc().get_size() / sizeof(float);
    float lo = 0, hi = 0;
    bool nan = false;
    for (size_t i = 0; i < count; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]), nan = nan || v[i] != v[i];
    if (nan) lo = hi = std::numeric_limits<float>::quiet_NaN();  // reported, not skipped: calibration refuses it
    ranges[2 * k] = lo;
    ranges[2 * k + 1] = hi;
  }
  for (; done < p.steps.size(); ++done) p.steps[done]();
  Strm().wait();
  return ranges;
}

}  // namespace residual
