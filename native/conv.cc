// Convolution forward, backward-data and backward-weights (groups, stride, padding, dilation).
// Activations and their gradients are NHWC; weights are plain OIHW (goihw view for groups) and are
// reordered into the primitive's format through the tensor's derived-copy cache (once per update).
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "grouped_conv.h"

namespace residual {
namespace {

struct ConvShape {
  int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g, oh, ow;
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
    return k;
  }
};

ConvShape ParseConv(Tensor* x, Tensor* w, const Napi::CallbackInfo& info, size_t at) {
  Require(x->Rank() == 4, "input must be 4-D [N,C,H,W]");
  Require(w->Rank() == 4, "weight must be 4-D [O,C/groups,KH,KW]");
  ConvShape s{};
  s.n = x->Dim(0); s.c = x->Dim(1); s.h = x->Dim(2); s.w = x->Dim(3);
  s.o = w->Dim(0); s.kh = w->Dim(2); s.kw = w->Dim(3);
  s.sh = ArgInt(info, at); s.sw = ArgInt(info, at + 1);
  s.ph = ArgInt(info, at + 2); s.pw = ArgInt(info, at + 3);
  s.dh = ArgInt(info, at + 4); s.dw = ArgInt(info, at + 5);
  s.g = ArgInt(info, at + 6);
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

memory::desc Any(const dims& d) { return memory::desc(d, dt::f32, tag::any); }

struct FwdEntry {
  dnnl::convolution_forward::primitive_desc pd;
  Prim prim;
};
struct BwdDataEntry {
  dnnl::convolution_backward_data::primitive_desc pd;
  Prim prim;
};
struct BwdWeiEntry {
  dnnl::convolution_backward_weights::primitive_desc pd;
  Prim prim;
};

Cache<FwdEntry>& g_fwd = *new Cache<FwdEntry>();  // never destroyed: nothing may run at process exit
Cache<BwdDataEntry>& g_bwd_data = *new Cache<BwdDataEntry>();  // never destroyed: nothing may run at process exit
Cache<BwdWeiEntry>& g_bwd_wei = *new Cache<BwdWeiEntry>();  // never destroyed: nothing may run at process exit
// Experiment and test knob: let oneDNN choose the activation layout of every convolution (blocked
// nChw16c in f32 training), paying a reorder on each side, instead of NHWC.
bool g_any_layout = false;

// Activations explicitly NHWC (so no reorders); weights `any`. If oneDNN only offers a reference
// kernel for that combination, let it choose the activation layout too and pay the reorders.
FwdEntry& GetFwd(const ConvShape& s, bool bias) {
  Key k = s.K("conv_fwd");
  k << static_cast<int64_t>(bias);
  return g_fwd.Get(k, [&] {
    auto make = [&](const memory::desc& src, const memory::desc& dst) {
      memory::desc b = bias ? memory::desc({s.o}, dt::f32, tag::x) : memory::desc();
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
                                        Any(s.Wei()), b, dst, s.Strides(), s.Dil(), s.Pad(), s.Pad());
      return dnnl::convolution_forward::primitive_desc(d, UserScratchAttr(), Eng());
    };
    auto pd = make(NhwcMd(s.Src()), NhwcMd(s.Dst()));
    if (g_any_layout || IsRef(pd.impl_info_str())) {
      auto alt = make(Any(s.Src()), Any(s.Dst()));
      if (g_any_layout || !IsRef(alt.impl_info_str())) pd = alt;
    }
    RecordImpl(k.s, pd.impl_info_str());
    return FwdEntry{pd, MakePrim<decltype(pd), dnnl::convolution_forward>(pd)};
  });
}

BwdDataEntry& GetBwdData(const ConvShape& s) {
  Key k = s.K("conv_bwd_data");
  return g_bwd_data.Get(k, [&] {
    auto& f = GetFwd(s, false);
    auto make = [&](const memory::desc& dsrc, const memory::desc& ddst) {
      dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, dsrc, Any(s.Wei()), ddst,
                                              s.Strides(), s.Dil(), s.Pad(), s.Pad());
      return dnnl::convolution_backward_data::primitive_desc(d, UserScratchAttr(), Eng(), f.pd);
    };
    auto pd = make(NhwcMd(s.Src()), NhwcMd(s.Dst()));
    if (g_any_layout || IsRef(pd.impl_info_str())) {
      auto alt = make(Any(s.Src()), Any(s.Dst()));
      if (g_any_layout || !IsRef(alt.impl_info_str())) pd = alt;
    }
    RecordImpl(k.s, pd.impl_info_str());
    return BwdDataEntry{pd, MakePrim<decltype(pd), dnnl::convolution_backward_data>(pd)};
  });
}

BwdWeiEntry& GetBwdWei(const ConvShape& s, bool bias) {
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
    auto pd = make(NhwcMd(s.Src()), NhwcMd(s.Dst()));
    if (g_any_layout || IsRef(pd.impl_info_str())) {
      auto alt = make(Any(s.Src()), Any(s.Dst()));
      if (g_any_layout || !IsRef(alt.impl_info_str())) pd = alt;
    }
    RecordImpl(k.s, pd.impl_info_str());
    return BwdWeiEntry{pd, MakePrim<decltype(pd), dnnl::convolution_backward_weights>(pd)};
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
// RESIDUAL_NATIVE_GROUPED=onednn keeps oneDNN's for A/B.
bool Narrow(const ConvShape& s) {
  static const bool off = [] {
    const char* v = std::getenv("RESIDUAL_NATIVE_GROUPED");
    return v != nullptr && std::string(v) == "onednn";
  }();
  return !off && !g_any_layout && GroupedConv3x3::Covers(s.c, s.o, s.g, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw);
}

// y (NHWC) = the narrow grouped conv of `src` (NHWC, [n, c, h, w]) with OIHW weights `wei` (+ bias).
void RunNarrow(const ConvShape& s, const float* wei, const float* bias, int64_t stride, const void* src, int64_t h, int64_t w,
               void* dst, int64_t oh, int64_t ow) {
  std::vector<float> zeros;
  if (!bias) zeros.assign(static_cast<size_t>(s.o), 0.f);
  GroupedConv3x3 k(wei, bias ? bias : zeros.data(), s.o, s.c / s.g, stride, false, false);
  k.Run(src, BlockStrides::Nhwc(s.c, h, w), h, w, dst, BlockStrides::Nhwc(s.o, oh, ow), oh, ow, s.n, false);
}

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* b = ArgTensorOrNull(info, 2);
  ConvShape s = ParseConv(x, w, info, 3);
  if (b) Require(b->Numel() == s.o && b->layout == Layout::Plain, "bias must have one value per output channel");
  if (Narrow(s)) {
    WeightView(w, s);  // plain OIHW
    memory src = AsLayout(x, Layout::NHWC);
    NewT y = NewCanon(info.Env(), s.Dst());
    RecordImpl(s.K("conv_fwd").s, s.c / s.g == 4 ? "residual:grouped3x3:g4" : "residual:grouped3x3:g8");
    RunNarrow(s, w->Data(), b ? b->Data() : nullptr, s.sh, src.get_data_handle(), s.h, s.w, y.t->mem.get_data_handle(), s.oh, s.ow);
    return y.obj;
  }
  auto& e = GetFwd(s, b != nullptr);
  memory wei = w->Derived(WeightView(w, s), e.pd.weights_desc());
  memory src = Want(AsLayout(x, Layout::NHWC), e.pd.src_desc());
  NewT y = NewCanon(info.Env(), s.Dst());
  bool direct = e.pd.dst_desc() == y.t->md;
  memory dst = direct ? y.t->mem : memory(e.pd.dst_desc(), Eng());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  if (b) args[DNNL_ARG_BIAS] = memory(memory::desc({s.o}, dt::f32, tag::x), Eng(), b->Data());
  e.prim.Exec(std::move(args));
  if (!direct) Reorder(dst, y.t->mem);
  return y.obj;
}

// conv2dBackward(x, w, dy, sh, sw, ph, pw, dh, dw, groups, needInput, needWeight, needBias)
Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* dy = ArgTensor(info, 2);
  ConvShape s = ParseConv(x, w, info, 3);
  bool need_x = ArgBool(info, 10), need_w = ArgBool(info, 11), need_b = ArgBool(info, 12);
  Require(dy->Rank() == 4 && dy->shape == s.Dst(), "dy shape does not match the convolution output");
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  memory::desc wview = WeightView(w, s);  // may relayout w: before any other memory handle is taken
  memory ddst_nhwc = AsLayout(dy, Layout::NHWC);

  if (need_x && Narrow(s) && s.sh == 1) {
    // dx = conv(dy, w') with w'[g*W + i][o][a][b] = w[g*W + o][i][2 - a][2 - b] (stride 1, padding 1)
    const int64_t width = s.c / s.g;
    const float* wp = w->Data();
    std::vector<float> wt(static_cast<size_t>(s.o * width * 9));
    for (int64_t g = 0; g < s.g; ++g)
      for (int64_t o = 0; o < width; ++o)
        for (int64_t i = 0; i < width; ++i)
          for (int64_t t = 0; t < 9; ++t)
            wt[static_cast<size_t>(((g * width + i) * width + o) * 9 + t)] = wp[((g * width + o) * width + i) * 9 + (8 - t)];
    NewT dx = NewCanon(env, s.Src());
    RecordImpl(s.K("conv_bwd_data").s, width == 4 ? "residual:grouped3x3:g4" : "residual:grouped3x3:g8");
    RunNarrow(s, wt.data(), nullptr, 1, ddst_nhwc.get_data_handle(), s.oh, s.ow, dx.t->mem.get_data_handle(), s.h, s.w);
    out.Set("dx", dx.obj);
  } else if (need_x) {
    auto& e = GetBwdData(s);
    memory ddst = Want(ddst_nhwc, e.pd.diff_dst_desc());
    memory wei = w->Derived(wview, e.pd.weights_desc());
    NewT dx = NewCanon(env, s.Src());
    bool direct = e.pd.diff_src_desc() == dx.t->md;
    memory dsrc = direct ? dx.t->mem : memory(e.pd.diff_src_desc(), Eng());
    e.prim.Exec({{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, dsrc}});
    if (!direct) Reorder(dsrc, dx.t->mem);
    out.Set("dx", dx.obj);
  }
  if (need_w) {
    auto& e = GetBwdWei(s, need_b);
    memory src = Want(AsLayout(x, Layout::NHWC), e.pd.src_desc());
    memory ddst = Want(ddst_nhwc, e.pd.diff_dst_desc());
    NewT dw = NewPlain(env, w->shape);
    memory view(s.WeiPlain(), Eng(), dw.t->Data());
    bool direct = e.pd.diff_weights_desc() == view.get_desc();
    memory dwei = direct ? view : memory(e.pd.diff_weights_desc(), Eng());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dwei}};
    NewT db{};
    if (need_b) {
      db = NewPlain(env, {s.o});
      args[DNNL_ARG_DIFF_BIAS] = memory(memory::desc({s.o}, dt::f32, tag::x), Eng(), db.t->Data());
    }
    e.prim.Exec(std::move(args));
    if (!direct) Reorder(dwei, view);
    out.Set("dw", dw.obj);
    if (need_b) out.Set("db", db.obj);
  } else if (need_b) {
    // Bias gradient alone: a sum of dy over N, H, W (dy is NHWC: channels are innermost).
    NewT db = NewPlain(env, {s.o});
    const float* g = static_cast<const float*>(ddst_nhwc.get_data_handle());
    float* r = db.t->Data();
    int64_t pixels = s.n * s.oh * s.ow;
    std::vector<double> acc(static_cast<size_t>(s.o), 0.0);
    for (int64_t p = 0; p < pixels; ++p) {
      const float* row = g + p * s.o;
      for (int64_t c = 0; c < s.o; ++c) acc[c] += row[c];
    }
    for (int64_t c = 0; c < s.o; ++c) r[c] = static_cast<float>(acc[c]);
    out.Set("db", db.obj);
  }
  return out;
}

// setConvLayout('nhwc' | 'any')
Napi::Value SetConvLayout(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsString(), "expected 'nhwc' or 'any'");
  std::string v = info[0].As<Napi::String>().Utf8Value();
  Require(v == "nhwc" || v == "any", "expected 'nhwc' or 'any'");
  bool any = v == "any";
  if (any != g_any_layout) {
    g_any_layout = any;
    g_fwd.map.clear();
    g_bwd_data.map.clear();
    g_bwd_wei.map.clear();
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterConv(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "conv2d", Conv2d);
  Export(env, exports, "conv2dBackward", Conv2dBackward);
  Export(env, exports, "setConvLayout", SetConvLayout);
}

}  // namespace residual
