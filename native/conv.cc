// Convolution forward, backward-data and backward-weights (groups, stride, padding, dilation).
// Activations and their gradients are NHWC; weights are plain OIHW (goihw view for groups) and are
// reordered into the primitive's format through the tensor's derived-copy cache (once per update).
//
// Mixed precision (ConvParams::bf16, the trailing JS argument): the convolution reads bf16 and
// accumulates in f32, PyTorch autocast's semantics, and writes its output in bf16, so the activations
// between ops (BN, ReLU, sums, pooling) move half the bytes. diff_src has the data type of the input
// (bf16 for an activation, f32 for the image); diff_weights and diff_bias are f32 (the master weights
// stay f32). An f32 input (the image) gets a bf16 copy cached on it (a derived copy), so the forward
// converts it once and backward-weights reuses it; the weights' bf16 copies come from the same cache
// (one conversion per optimizer step); an f32 dy is converted once per backward call.
#include <cstdlib>
#include <cstring>

#include "conv.h"
#include "grouped_conv.h"

namespace residual {
namespace {

struct ConvShape {
  int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g, oh, ow;
  bool bf16;  // read src/weights/diff_dst as bf16, write dst as bf16 (f32 accumulation)
  bool bf16_dsrc = false;  // backward-data writes diff_src as bf16 (the input is a bf16 activation)
  dims Src() const { return {n, c, h, w}; }
  dims Dst() const { return {n, o, oh, ow}; }
  dims Wei() const { return g > 1 ? dims{g, o / g, c / g, kh, kw} : dims{o, c / g, kh, kw}; }
  memory::desc WeiPlain() const {
    return g > 1 ? memory::desc(Wei(), dt::f32, tag::goihw) : memory::desc(Wei(), dt::f32, tag::oihw);
  }
  dims Strides() const { return {sh, sw}; }
  dims Dil() const { return {dh - 1, dw - 1}; }
  dims Pad() const { return {ph, pw}; }
  Key K(const char* op) const {
    Key k(op);
    k << n << c << h << w << o << kh << kw << sh << sw << ph << pw << dh << dw << g;
    if (bf16) k << "bf16";
    if (bf16_dsrc) k << "bf16_dsrc";
    return k;
  }
};

ConvShape ShapeOf(Tensor* x, Tensor* w, const ConvParams& p) {
  Require(x->Rank() == 4, "input must be 4-D [N,C,H,W]");
  Require(w->Rank() == 4, "weight must be 4-D [O,C/groups,KH,KW]");
  ConvShape s{};
  s.n = x->Dim(0); s.c = x->Dim(1); s.h = x->Dim(2); s.w = x->Dim(3);
  s.o = w->Dim(0); s.kh = w->Dim(2); s.kw = w->Dim(3);
  s.sh = p.sh; s.sw = p.sw;
  s.ph = p.ph; s.pw = p.pw;
  s.dh = p.dh; s.dw = p.dw;
  s.g = p.groups;
  Require(s.sh >= 1 && s.sw >= 1 && s.dh >= 1 && s.dw >= 1 && s.ph >= 0 && s.pw >= 0, "bad stride, padding or dilation");
  Require(s.g >= 1 && s.c % s.g == 0 && s.o % s.g == 0, "channels must divide by groups");
  Require(w->Dim(1) * s.g == s.c, "weight shape does not match input channels / groups");
  s.oh = (s.h + 2 * s.ph - s.dh * (s.kh - 1) - 1) / s.sh + 1;
  s.ow = (s.w + 2 * s.pw - s.dw * (s.kw - 1) - 1) / s.sw + 1;
  Require(s.h + 2 * s.ph - s.dh * (s.kh - 1) - 1 >= 0 && s.w + 2 * s.pw - s.dw * (s.kw - 1) - 1 >= 0,
          "kernel is larger than the padded input");
  Require(s.n >= 1 && s.oh >= 1 && s.ow >= 1, "empty convolution");
  return s;
}

bool IsRef(const char* impl) { return impl && std::strncmp(impl, "ref", 3) == 0; }

memory::desc Any(const dims& d, dt type = dt::f32) { return memory::desc(d, type, tag::any); }
memory::desc Nhwc(const dims& d, dt type) { return memory::desc(d, type, tag::nhwc); }
dt Low(const ConvShape& s) { return s.bf16 ? dt::bf16 : dt::f32; }

struct FwdEntry {
  dnnl::convolution_forward::primitive_desc pd;
  Prim prim;
  bool ref;
};
struct BwdDataEntry {
  dnnl::convolution_backward_data::primitive_desc pd;
  Prim prim;
  bool ref;
};
struct BwdWeiEntry {
  dnnl::convolution_backward_weights::primitive_desc pd;
  Prim prim;
  bool ref;
};

Cache<FwdEntry>& g_fwd = *new Cache<FwdEntry>();  // never destroyed: nothing may run at process exit
Cache<BwdDataEntry>& g_bwd_data = *new Cache<BwdDataEntry>();  // never destroyed: nothing may run at process exit
Cache<BwdWeiEntry>& g_bwd_wei = *new Cache<BwdWeiEntry>();  // never destroyed: nothing may run at process exit
// Experiment and test knob: let oneDNN choose the activation layout of every convolution (blocked
// nChw16c in f32 training), paying a reorder on each side, instead of NHWC.
bool g_any_layout = false;

// Activations explicitly NHWC (so no reorders); weights `any`. If oneDNN only offers a reference
// kernel for that combination, let it choose the activation layout too and pay the reorders.
FwdEntry& GetFwd(const ConvShape& shape, bool bias) {
  ConvShape s = shape;
  s.bf16_dsrc = false;  // backward-data's concern only
  Key k = s.K("conv_fwd");
  k << static_cast<int64_t>(bias);
  return g_fwd.Get(k, [&] {
    auto make = [&](const memory::desc& src, const memory::desc& dst) {
      memory::desc b = bias ? memory::desc({s.o}, dt::f32, tag::x) : memory::desc();
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
                                        Any(s.Wei(), Low(s)), b, dst, s.Strides(), s.Dil(), s.Pad(), s.Pad());
      return dnnl::convolution_forward::primitive_desc(d, UserScratchAttr(), Eng());
    };
    auto pd = make(Nhwc(s.Src(), Low(s)), Nhwc(s.Dst(), Low(s)));
    if (g_any_layout || IsRef(pd.impl_info_str())) {
      auto alt = make(Any(s.Src(), Low(s)), Any(s.Dst(), Low(s)));
      if (g_any_layout || !IsRef(alt.impl_info_str())) pd = alt;
    }
    RecordImpl(k.s, pd.impl_info_str());
    return FwdEntry{pd, MakePrim<decltype(pd), dnnl::convolution_forward>(pd), IsRef(pd.impl_info_str())};
  });
}

BwdDataEntry& GetBwdData(const ConvShape& s) {
  Key k = s.K("conv_bwd_data");
  return g_bwd_data.Get(k, [&] {
    auto& f = GetFwd(s, false);
    const dt dsrc_type = s.bf16_dsrc ? dt::bf16 : dt::f32;
    auto make = [&](const memory::desc& dsrc, const memory::desc& ddst) {
      dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, dsrc, Any(s.Wei(), Low(s)), ddst,
                                              s.Strides(), s.Dil(), s.Pad(), s.Pad());
      return dnnl::convolution_backward_data::primitive_desc(d, UserScratchAttr(), Eng(), f.pd);
    };
    auto pd = make(Nhwc(s.Src(), dsrc_type), Nhwc(s.Dst(), Low(s)));
    if (g_any_layout || IsRef(pd.impl_info_str())) {
      auto alt = make(Any(s.Src(), dsrc_type), Any(s.Dst(), Low(s)));
      if (g_any_layout || !IsRef(alt.impl_info_str())) pd = alt;
    }
    RecordImpl(k.s, pd.impl_info_str());
    return BwdDataEntry{pd, MakePrim<decltype(pd), dnnl::convolution_backward_data>(pd), IsRef(pd.impl_info_str())};
  });
}

BwdWeiEntry& GetBwdWei(const ConvShape& shape, bool bias) {
  ConvShape s = shape;
  s.bf16_dsrc = false;  // backward-data's concern only
  Key k = s.K("conv_bwd_weights");
  k << static_cast<int64_t>(bias);
  return g_bwd_wei.Get(k, [&] {
    auto& f = GetFwd(s, false);
    auto make = [&](const memory::desc& src, const memory::desc& ddst) {
      memory::desc b = bias ? memory::desc({s.o}, dt::f32, tag::x) : memory::desc();
      dnnl::convolution_backward_weights::desc d(dnnl::algorithm::convolution_direct, src, Any(s.Wei()), b, ddst,
                                                 s.Strides(), s.Dil(), s.Pad(), s.Pad());
      return dnnl::convolution_backward_weights::primitive_desc(d, UserScratchAttr(), Eng(), f.pd);
    };
    auto pd = make(Nhwc(s.Src(), Low(s)), Nhwc(s.Dst(), Low(s)));
    if (g_any_layout || IsRef(pd.impl_info_str())) {
      auto alt = make(Any(s.Src(), Low(s)), Any(s.Dst(), Low(s)));
      if (g_any_layout || !IsRef(alt.impl_info_str())) pd = alt;
    }
    RecordImpl(k.s, pd.impl_info_str());
    return BwdWeiEntry{pd, MakePrim<decltype(pd), dnnl::convolution_backward_weights>(pd), IsRef(pd.impl_info_str())};
  });
}

// `m` (NHWC) as the memory a primitive wants: itself, or a temporary reorder when the primitive
// chose another layout (only on the reference-fallback path).
memory Want(const memory& m, const memory::desc& want) {
  if (m.get_desc() == want) return m;
  memory t(want, Eng());
  Reorder(m, t);
  return t;
}

// The weights viewed as the primitive's user format: plain OIHW/goihw.
memory::desc WeightView(Tensor* w, const ConvShape& s) {
  if (w->layout != Layout::Plain) w->Relayout(Layout::Plain);
  return s.WeiPlain();
}

// ResNeXt's 3x3 convs with 4 or 8 channels per group run our own kernel (grouped_conv.cc; oneDNN's
// NHWC kernels for them run at a third of its rate): the forward, and the stride-1 backward-data,
// which is the same convolution of dy with each group's weights transposed and flipped.
// Config().grouped_onednn (RESIDUAL_NATIVE_GROUPED=onednn) keeps oneDNN's for A/B.
bool Narrow(const ConvShape& s) {
  return !Config().grouped_onednn && !g_any_layout && GroupedConv3x3::Covers(s.c, s.o, s.g, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw);
}

// f32 values rounded to the nearest bf16 (ties to even), kept as f32: the weights a bf16 conv reads.
std::vector<float> RoundedToBf16(const float* p, size_t n) {
  std::vector<float> r(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, &p[i], 4);
    if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;  // inf/nan pass
    else b &= 0xffff0000u;
    std::memcpy(&r[i], &b, 4);
  }
  return r;
}

// A temporary buffer from the tensor pool, given back when it goes out of scope (execution on the
// CPU stream is synchronous, so nothing reads it afterwards).
struct Temp {
  memory m;
  void* buf = nullptr;
  size_t bytes = 0;
  explicit Temp(const memory::desc& md) : bytes(md.get_size()) { m = PooledMemory(md, &buf); }
  ~Temp() { PoolFree(buf, bytes); }
  Temp(const Temp&) = delete;
  Temp& operator=(const Temp&) = delete;
};

// bf16 training needs AVX512-BF16 (or AMX): without it oneDNN 2.6 would emulate bf16 on avx512_core
// or fall back to reference kernels, slower than f32, which defeats the point.
void RequireBf16Isa() {
  const int bf16 = static_cast<int>(dnnl::cpu_isa::avx512_core_bf16);  // ISA values are nested bit sets
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  Require((static_cast<int>(isa) & bf16) == bf16,
          std::string("bf16 training needs a CPU with AVX512-BF16 (or AMX), and oneDNN reports this one as ") + IsaName(isa) +
              " (no bf16 instructions; DNNL_MAX_CPU_ISA may have capped it): train with dtype f32");
}

// y (NHWC) = the narrow grouped conv of `src` (NHWC, [n, c, h, w]) with OIHW weights `wei` (+ bias);
// `bf16`: src and dst are stored as bf16 (the weights are rounded to bf16 first, f32 arithmetic).
// A bf16 dst written into an f32 tensor goes through a pooled temporary.
void RunNarrow(const ConvShape& s, const float* wei, const float* bias, int64_t stride, const void* src, int64_t h, int64_t w,
               void* dst, int64_t oh, int64_t ow, bool bf16 = false) {
  std::vector<float> zeros, rounded;
  if (!bias) zeros.assign(static_cast<size_t>(s.o), 0.f);
  if (bf16) {
    rounded = RoundedToBf16(wei, static_cast<size_t>(s.o * (s.c / s.g) * 9));
    wei = rounded.data();
  }
  GroupedConv3x3 k(wei, bias ? bias : zeros.data(), s.o, s.c / s.g, stride, false, false);
  k.Run(src, BlockStrides::Nhwc(s.c, h, w), h, w, dst, BlockStrides::Nhwc(s.o, oh, ow), oh, ow, s.n, bf16);
}

// The input's values as bf16 NHWC: its own memory when it is a bf16 activation, else a derived copy
// cached on the tensor (valid while it is not mutated), so backward-weights reads the copy the
// forward made.
memory Bf16Input(Tensor* x) {
  Require(x->layout != Layout::Opaque, "an opaque tensor (a pooling argmax) was passed where values are expected");
  return x->Derived(x->md, Nhwc(x->shape, dt::bf16));
}

// Whether this shape runs in bf16: asked for, and oneDNN has a non-reference kernel for all three
// directions (else the conv stays f32, which is only slower, never wrong).
bool Bf16Runs(ConvShape s, bool bias) {
  if (!s.bf16) return false;
  static Cache<bool>& ok = *new Cache<bool>();
  return ok.Get(s.K("conv_bf16_ok") << static_cast<int64_t>(bias), [&] {
    if (Narrow(s)) return !GetBwdWei(s, bias).ref && (s.sh == 1 || !GetBwdData(s).ref);  // fwd, stride-1 bwd-data: ours
    return !GetFwd(s, bias).ref && !GetBwdData(s).ref && !GetBwdWei(s, bias).ref;
  });
}

}  // namespace

Tensor* Conv2d(Tensor* x, Tensor* w, Tensor* b, const ConvParams& p, Outputs& outs) {
  ConvShape s = ShapeOf(x, w, p);
  s.bf16 = p.bf16;
  if (s.bf16) RequireBf16Isa();
  if (b) Require(b->Numel() == s.o && b->layout == Layout::Plain, "bias must have one value per output channel");
  s.bf16 = Bf16Runs(s, b != nullptr);
  Tensor* y = outs.New(s.Dst(), Layout::NHWC, Nhwc(s.Dst(), Low(s)));
  if (Narrow(s)) {
    WeightView(w, s);  // plain OIHW
    RecordImpl(s.K("conv_fwd").s, s.c / s.g == 4 ? "residual:grouped3x3:g4" : "residual:grouped3x3:g8");
    if (s.bf16) {
      memory src = Bf16Input(x);
      RunNarrow(s, w->Data(), b ? b->Data() : nullptr, s.sh, src.get_data_handle(), s.h, s.w, y->mem.get_data_handle(), s.oh, s.ow, true);
      return y;
    }
    memory src = AsLayout(x, Layout::NHWC);
    RunNarrow(s, w->Data(), b ? b->Data() : nullptr, s.sh, src.get_data_handle(), s.h, s.w, y->mem.get_data_handle(), s.oh, s.ow);
    return y;
  }
  auto& e = GetFwd(s, b != nullptr);
  memory wei = w->Derived(WeightView(w, s), e.pd.weights_desc());
  memory src = Want(s.bf16 ? Bf16Input(x) : AsLayout(x, Layout::NHWC), e.pd.src_desc());
  bool direct = e.pd.dst_desc() == y->md;
  memory dst = direct ? y->mem : memory(e.pd.dst_desc(), Eng());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  if (b) args[DNNL_ARG_BIAS] = memory(memory::desc({s.o}, dt::f32, tag::x), Eng(), b->Data());
  e.prim.Exec(std::move(args));
  if (!direct) Reorder(dst, y->mem);
  return y;
}

Grads Conv2dBackward(Tensor* x, Tensor* w, Tensor* dy, const ConvParams& p, GradsWanted want, Outputs& outs) {
  ConvShape s = ShapeOf(x, w, p);
  const bool need_x = want.input, need_w = want.weight, need_b = want.bias;
  s.bf16 = p.bf16;
  if (s.bf16) RequireBf16Isa();
  Require(dy->Rank() == 4 && dy->shape == s.Dst(), "dy shape does not match the convolution output");
  Grads out;
  memory::desc wview = WeightView(w, s);  // may relayout w: before any other memory handle is taken
  s.bf16 = (need_x || need_w) && Bf16Runs(s, need_b);
  s.bf16_dsrc = s.bf16 && x->Bf16();
  // dy as the conv reads it (bf16 or f32), converted at most once for backward-data and backward-weights.
  memory ddst_in = AsCanonOf(dy, Low(s));

  if (need_x && Narrow(s) && s.sh == 1) {
    // dx = conv(dy, w') with w'[g*W + i][o][a][b] = w[g*W + o][i][2 - a][2 - b] (stride 1, padding 1)
    const int64_t width = s.c / s.g;
    std::vector<float> rounded;
    if (s.bf16) rounded = RoundedToBf16(w->Data(), static_cast<size_t>(s.o * width * 9));
    const float* wp = s.bf16 ? rounded.data() : w->Data();
    std::vector<float> wt(static_cast<size_t>(s.o * width * 9));
    for (int64_t g = 0; g < s.g; ++g)
      for (int64_t o = 0; o < width; ++o)
        for (int64_t i = 0; i < width; ++i)
          for (int64_t t = 0; t < 9; ++t)
            wt[static_cast<size_t>(((g * width + i) * width + o) * 9 + t)] = wp[((g * width + o) * width + i) * 9 + (8 - t)];
    Tensor* dx = outs.New(s.Src(), Layout::NHWC, Nhwc(s.Src(), s.bf16_dsrc ? dt::bf16 : dt::f32));
    RecordImpl(s.K("conv_bwd_data").s, width == 4 ? "residual:grouped3x3:g4" : "residual:grouped3x3:g8");
    if (s.bf16_dsrc) {
      RunNarrow(s, wt.data(), nullptr, 1, ddst_in.get_data_handle(), s.oh, s.ow, dx->mem.get_data_handle(), s.h, s.w, true);
    } else if (s.bf16) {
      Temp dsrc(Nhwc(s.Src(), dt::bf16));
      RunNarrow(s, wt.data(), nullptr, 1, ddst_in.get_data_handle(), s.oh, s.ow, dsrc.m.get_data_handle(), s.h, s.w, true);
      Reorder(dsrc.m, dx->mem);
    } else {
      RunNarrow(s, wt.data(), nullptr, 1, ddst_in.get_data_handle(), s.oh, s.ow, dx->mem.get_data_handle(), s.h, s.w);
    }
    out.dx = dx;
  } else if (need_x) {
    auto& e = GetBwdData(s);
    memory ddst = Want(ddst_in, e.pd.diff_dst_desc());
    memory wei = w->Derived(wview, e.pd.weights_desc());
    Tensor* dx = outs.New(s.Src(), Layout::NHWC, Nhwc(s.Src(), s.bf16_dsrc ? dt::bf16 : dt::f32));
    bool direct = e.pd.diff_src_desc() == dx->md;
    memory dsrc = direct ? dx->mem : memory(e.pd.diff_src_desc(), Eng());
    e.prim.Exec({{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, dsrc}});
    if (!direct) Reorder(dsrc, dx->mem);
    out.dx = dx;
  }
  if (need_w) {
    auto& e = GetBwdWei(s, need_b);
    memory src = Want(s.bf16 ? Bf16Input(x) : AsLayout(x, Layout::NHWC), e.pd.src_desc());
    memory ddst = Want(ddst_in, e.pd.diff_dst_desc());
    Tensor* dw = outs.Plain(w->shape);
    memory view(s.WeiPlain(), Eng(), dw->Data());
    bool direct = e.pd.diff_weights_desc() == view.get_desc();
    memory dwei = direct ? view : memory(e.pd.diff_weights_desc(), Eng());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dwei}};
    Tensor* db = nullptr;
    if (need_b) {
      db = outs.Plain({s.o});
      args[DNNL_ARG_DIFF_BIAS] = memory(memory::desc({s.o}, dt::f32, tag::x), Eng(), db->Data());
    }
    e.prim.Exec(std::move(args));
    if (!direct) Reorder(dwei, view);
    out.dw = dw;
    out.db = db;
  } else if (need_b) {
    // Bias gradient alone: a sum of dy over N, H, W (dy is NHWC: channels are innermost). In f32 even
    // under bf16: a memory-bound pass that a conversion would only slow down.
    Tensor* db = outs.Plain({s.o});
    memory ddst_f32 = AsLayout(dy, Layout::NHWC);
    const float* g = static_cast<const float*>(ddst_f32.get_data_handle());
    float* r = db->Data();
    int64_t pixels = s.n * s.oh * s.ow;
    std::vector<double> acc(static_cast<size_t>(s.o), 0.0);
    for (int64_t p = 0; p < pixels; ++p) {
      const float* row = g + p * s.o;
      for (int64_t c = 0; c < s.o; ++c) acc[c] += row[c];
    }
    for (int64_t c = 0; c < s.o; ++c) r[c] = static_cast<float>(acc[c]);
    out.db = db;
  }
  return out;
}

void SetConvLayoutAny(bool any) {
  if (any != g_any_layout) {
    g_any_layout = any;
    g_fwd.map.clear();
    g_bwd_data.map.clear();
    g_bwd_wei.map.clear();
  }
}

}  // namespace residual
