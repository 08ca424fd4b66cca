// Max and average pooling (PyTorch's ceil_mode and count_include_pad) and the global average pool,
// all on NHWC. The max-pool argmax is oneDNN's workspace, kept as an opaque tensor. Max pooling runs in
// bf16 on a bf16 input (bf16 training's stem); the average pools widen a bf16 input to f32, so the
// global pool hands the classifier f32 features.
#include <algorithm>

#include "pooling.h"

namespace residual {
namespace {

using dnnl::algorithm;
using dnnl::prop_kind;

struct PoolShape {
  int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, prh, prw, oh, ow;
  bool ceil;
  dims Src() const { return {n, c, h, w}; }
  dims Dst() const { return {n, c, oh, ow}; }
};

// PyTorch's pooling_output_shape, plus the right padding oneDNN needs for the same output size.
int64_t OutSize(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil) {
  int64_t num = in + 2 * p - (k - 1) - 1 + (ceil ? s - 1 : 0);
  int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil && (out - 1) * s >= in + p) --out;
  return out;
}

PoolShape Shape(const dims& in, const PoolParams& p) {
  Require(in.size() == 4, "input must be 4-D [N,C,H,W]");
  PoolShape s{};
  s.n = in[0]; s.c = in[1]; s.h = in[2]; s.w = in[3];
  s.kh = p.kh; s.kw = p.kw;
  s.sh = p.sh; s.sw = p.sw;
  s.ph = p.ph; s.pw = p.pw;
  s.ceil = p.ceil;
  Require(s.kh >= 1 && s.kw >= 1 && s.sh >= 1 && s.sw >= 1 && s.ph >= 0 && s.pw >= 0, "bad kernel, stride or padding");
  Require(s.ph * 2 <= s.kh && s.pw * 2 <= s.kw, "padding must be at most half the kernel");
  s.oh = OutSize(s.h, s.kh, s.sh, s.ph, s.ceil);
  s.ow = OutSize(s.w, s.kw, s.sw, s.pw, s.ceil);
  Require(s.oh >= 1 && s.ow >= 1 && s.n >= 1 && s.c >= 1, "pooling output would be empty");
  s.prh = std::max(s.ph, (s.oh - 1) * s.sh + s.kh - s.h - s.ph);
  s.prw = std::max(s.pw, (s.ow - 1) * s.sw + s.kw - s.w - s.pw);
  return s;
}

Key PoolKey(const char* op, const PoolShape& s, algorithm alg, dt type) {
  Key k(op);
  k << s.n << s.c << s.h << s.w << s.kh << s.kw << s.sh << s.sw << s.ph << s.pw << s.prh << s.prw
    << static_cast<int64_t>(alg) << static_cast<int64_t>(type);
  return k;
}

struct PoolFwd {
  dnnl::pooling_forward::primitive_desc pd;
  Prim prim;
};
struct PoolBwd {
  dnnl::pooling_backward::primitive_desc pd;
  Prim prim;
};
Cache<PoolFwd>& g_fwd = *new Cache<PoolFwd>();  // never destroyed: nothing may run at process exit
Cache<PoolBwd>& g_bwd = *new Cache<PoolBwd>();  // never destroyed: nothing may run at process exit

PoolFwd& GetFwd(const PoolShape& s, algorithm alg, dt type = dt::f32) {
  Key k = PoolKey("pool_fwd", s, alg, type);
  return g_fwd.Get(k, [&] {
    dnnl::pooling_forward::desc d(prop_kind::forward_training, alg, NhwcMd(s.Src(), type), NhwcMd(s.Dst(), type), {s.sh, s.sw},
                                  {s.kh, s.kw}, {s.ph, s.pw}, {s.prh, s.prw});
    dnnl::pooling_forward::primitive_desc pd(d, UserScratchAttr(), Eng());
    RecordImpl(k.s, pd.impl_info_str());
    return PoolFwd{pd, MakePrim<decltype(pd), dnnl::pooling_forward>(pd)};
  });
}

PoolBwd& GetBwd(const PoolShape& s, algorithm alg, dt type = dt::f32) {
  Key k = PoolKey("pool_bwd", s, alg, type);
  return g_bwd.Get(k, [&] {
    auto& f = GetFwd(s, alg, type);
    dnnl::pooling_backward::desc d(alg, NhwcMd(s.Src(), type), NhwcMd(s.Dst(), type), {s.sh, s.sw}, {s.kh, s.kw}, {s.ph, s.pw},
                                   {s.prh, s.prw});
    dnnl::pooling_backward::primitive_desc pd(d, UserScratchAttr(), Eng(), f.pd);
    RecordImpl(k.s, pd.impl_info_str());
    return PoolBwd{pd, MakePrim<decltype(pd), dnnl::pooling_backward>(pd)};
  });
}

}  // namespace

MaxPoolResult MaxPool2d(Tensor* x, const PoolParams& p, Outputs& outs) {
  PoolShape s = Shape(x->shape, p);
  const dt type = x->Type();
  auto& e = GetFwd(s, algorithm::pooling_max, type);
  Tensor* y = outs.New(s.Dst(), Layout::NHWC, NhwcMd(s.Dst(), type));
  Tensor* ws = outs.New(s.Dst(), Layout::Opaque, e.pd.workspace_desc());
  e.prim.Exec({{DNNL_ARG_SRC, AsLayoutOf(x, Layout::NHWC, type)}, {DNNL_ARG_DST, y->mem}, {DNNL_ARG_WORKSPACE, ws->mem}});
  return {y, ws};
}

Tensor* MaxPool2dBackward(Tensor* x, Tensor* ws, Tensor* dy, const PoolParams& p, Outputs& outs) {
  PoolShape s = Shape(x->shape, p);
  Require(dy->shape == s.Dst(), "dy shape does not match the pooling output");
  const dt type = x->Type();  // dx has x's data type
  auto& e = GetBwd(s, algorithm::pooling_max, type);
  Require(ws->layout == Layout::Opaque && ws->md == e.pd.workspace_desc(),
          "argmax does not come from maxPool2d with these parameters");
  Tensor* dx = outs.New(s.Src(), Layout::NHWC, NhwcMd(s.Src(), type));
  e.prim.Exec({{DNNL_ARG_DIFF_DST, AsLayoutOf(dy, Layout::NHWC, type)}, {DNNL_ARG_WORKSPACE, ws->mem}, {DNNL_ARG_DIFF_SRC, dx->mem}});
  return dx;
}

namespace {

// PyTorch's divisor when count_include_pad is set and a ceil-mode window hangs past the right
// padding: oneDNN would count the whole kernel, PyTorch stops at in + pad. Done by a loop then.
bool NeedsLoop(const PoolShape& s, bool include_pad) { return include_pad && (s.prh > s.ph || s.prw > s.pw); }

struct Window {
  int64_t h0, h1, w0, w1;
  float inv_div;
};
Window Win(const PoolShape& s, int64_t oy, int64_t ox, bool include_pad) {
  int64_t hs = oy * s.sh - s.ph, ws = ox * s.sw - s.pw;
  int64_t he = std::min(hs + s.kh, s.h + s.ph), we = std::min(ws + s.kw, s.w + s.pw);
  int64_t pool = (he - hs) * (we - ws);
  hs = std::max<int64_t>(hs, 0); ws = std::max<int64_t>(ws, 0);
  he = std::min(he, s.h); we = std::min(we, s.w);
  int64_t div = include_pad ? pool : (he - hs) * (we - ws);
  return {hs, he, ws, we, div > 0 ? 1.f / static_cast<float>(div) : 0.f};
}

void AvgLoopFwd(const PoolShape& s, const float* x, float* y, bool include_pad) {
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t oy = 0; oy < s.oh; ++oy)
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        Window w = Win(s, oy, ox, include_pad);
        float* out = y + ((n * s.oh + oy) * s.ow + ox) * s.c;
        std::fill(out, out + s.c, 0.f);
        for (int64_t iy = w.h0; iy < w.h1; ++iy)
          for (int64_t ix = w.w0; ix < w.w1; ++ix) {
            const float* in = x + ((n * s.h + iy) * s.w + ix) * s.c;
            for (int64_t c = 0; c < s.c; ++c) out[c] += in[c];
          }
        for (int64_t c = 0; c < s.c; ++c) out[c] *= w.inv_div;
      }
}

void AvgLoopBwd(const PoolShape& s, const float* dy, float* dx, bool include_pad) {
  std::fill(dx, dx + s.n * s.h * s.w * s.c, 0.f);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t oy = 0; oy < s.oh; ++oy)
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        Window w = Win(s, oy, ox, include_pad);
        const float* g = dy + ((n * s.oh + oy) * s.ow + ox) * s.c;
        for (int64_t iy = w.h0; iy < w.h1; ++iy)
          for (int64_t ix = w.w0; ix < w.w1; ++ix) {
            float* d = dx + ((n * s.h + iy) * s.w + ix) * s.c;
            for (int64_t c = 0; c < s.c; ++c) d[c] += g[c] * w.inv_div;
          }
      }
}

algorithm AvgAlg(bool include_pad) {
  return include_pad ? algorithm::pooling_avg_include_padding : algorithm::pooling_avg_exclude_padding;
}

PoolShape GlobalShape(const dims& in) {
  Require(in.size() == 4 && in[2] >= 1 && in[3] >= 1 && in[0] >= 1 && in[1] >= 1, "input must be a non-empty [N,C,H,W]");
  PoolShape s{};
  s.n = in[0]; s.c = in[1]; s.h = in[2]; s.w = in[3];
  s.kh = s.h; s.kw = s.w; s.sh = s.h; s.sw = s.w;
  s.oh = 1; s.ow = 1;
  return s;
}

}  // namespace

Tensor* AvgPool2d(Tensor* x, const PoolParams& p, bool include_pad, Outputs& outs) {
  PoolShape s = Shape(x->shape, p);
  Tensor* y = outs.Canon(s.Dst());
  memory src = AsLayout(x, Layout::NHWC);
  if (NeedsLoop(s, include_pad)) {
    AvgLoopFwd(s, static_cast<const float*>(src.get_data_handle()), y->Data(), include_pad);
  } else {
    auto& e = GetFwd(s, AvgAlg(include_pad));
    e.prim.Exec({{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, y->mem}});
  }
  return y;
}

Tensor* AvgPool2dBackward(Tensor* dy, const dims& in, const PoolParams& p, bool include_pad, Outputs& outs) {
  PoolShape s = Shape(in, p);
  Require(dy->shape == s.Dst(), "dy shape does not match the pooling output");
  Tensor* dx = outs.Canon(s.Src());
  memory g = AsLayout(dy, Layout::NHWC);
  if (NeedsLoop(s, include_pad)) {
    AvgLoopBwd(s, static_cast<const float*>(g.get_data_handle()), dx->Data(), include_pad);
  } else {
    auto& e = GetBwd(s, AvgAlg(include_pad));
    e.prim.Exec({{DNNL_ARG_DIFF_DST, g}, {DNNL_ARG_DIFF_SRC, dx->mem}});
  }
  return dx;
}

Tensor* GlobalAvgPool(Tensor* x, Outputs& outs) {
  PoolShape s = GlobalShape(x->shape);
  auto& e = GetFwd(s, algorithm::pooling_avg_exclude_padding);
  Tensor* y = outs.Canon(s.Dst());
  e.prim.Exec({{DNNL_ARG_SRC, AsLayout(x, Layout::NHWC)}, {DNNL_ARG_DST, y->mem}});
  return y;
}

Tensor* GlobalAvgPoolBackward(Tensor* dy, const dims& in, Outputs& outs) {
  PoolShape s = GlobalShape(in);
  Require(dy->Numel() == s.n * s.c, "dy must be [N,C,1,1]");
  auto& e = GetBwd(s, algorithm::pooling_avg_exclude_padding);
  Tensor* dx = outs.Canon(s.Src());
  // [N,C,1,1] is the same bytes in every layout, and so is [N,C]: no reorder needed.
  memory g = dy->layout == Layout::Opaque || dy->Bf16() ? AsLayout(dy, Layout::NHWC)
                                                        : memory(NhwcMd(s.Dst()), Eng(), dy->Data());
  e.prim.Exec({{DNNL_ARG_DIFF_DST, g}, {DNNL_ARG_DIFF_SRC, dx->mem}});
  return dx;
}

}  // namespace residual
