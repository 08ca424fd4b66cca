// Channel plumbing: concat and split along C (ResNeXt forms a and b) and the CIFAR option-A
// shortcut (subsample H and W, zero-pad channels). Plain copy loops on the activation layout.
#include <algorithm>
#include <cstring>

#include "channels.h"

namespace residual {
namespace {

// Views a canonical tensor as outer x C x inner: NHWC is [N*H*W, C, 1], plain is [N, C, prod(rest)].
struct Geometry {
  int64_t outer, c, inner;
};
Geometry Geo(const dims& shape, Layout l) {
  Geometry g{shape[0], shape[1], 1};
  for (size_t i = 2; i < shape.size(); ++i) g.inner *= shape[i];
  if (l == Layout::NHWC) {
    g.outer = shape[0] * shape[2] * shape[3];
    g.inner = 1;
  }
  return g;
}

}  // namespace

Tensor* ConcatChannels(const std::vector<Tensor*>& xs, Outputs& outs) {
  Require(!xs.empty(), "concat needs at least one tensor");
  dims shape = xs[0]->shape;
  Require(shape.size() >= 2, "concat inputs must be [N,C,...]");
  int64_t total = 0;
  for (Tensor* t : xs) {
    Require(t->Rank() == static_cast<int>(shape.size()), "concat inputs must have the same rank");
    for (size_t d = 0; d < shape.size(); ++d)
      Require(d == 1 || t->shape[d] == shape[d], "concat inputs must agree on every dimension but C");
    total += t->Dim(1);
  }
  shape[1] = total;
  Tensor* y = outs.Canon(shape);
  Geometry go = Geo(shape, y->layout);
  float* out = y->Data();
  int64_t off = 0;
  for (Tensor* t : xs) {
    memory m = AsCanon(t);
    const float* in = static_cast<const float*>(m.get_data_handle());
    int64_t chunk = t->Dim(1) * go.inner;
    int64_t row = go.c * go.inner;
    if (chunk > 0)
      for (int64_t o = 0; o < go.outer; ++o) std::memcpy(out + o * row + off * go.inner, in + o * chunk, chunk * sizeof(float));
    off += t->Dim(1);
  }
  return y;
}

std::vector<Tensor*> SplitChannels(Tensor* x, const dims& sizes, Outputs& outs) {
  Require(x->Rank() >= 2, "input must be [N,C,...]");
  int64_t sum = 0;
  for (auto s : sizes) sum += s;
  Require(sum == x->Dim(1), "split sizes must add up to the channel count");
  memory m = AsCanon(x);
  const float* in = static_cast<const float*>(m.get_data_handle());
  Layout l = x->Rank() == 4 ? Layout::NHWC : Layout::Plain;
  Geometry gi = Geo(x->shape, l);
  std::vector<Tensor*> out;
  int64_t off = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    dims shape = x->shape;
    shape[1] = sizes[i];
    Tensor* y = outs.Canon(shape);
    int64_t chunk = sizes[i] * gi.inner, row = gi.c * gi.inner;
    float* o = y->Data();
    if (chunk > 0)
      for (int64_t r = 0; r < gi.outer; ++r) std::memcpy(o + r * chunk, in + r * row + off * gi.inner, chunk * sizeof(float));
    off += sizes[i];
    out.push_back(y);
  }
  return out;
}

Tensor* ShortcutA(Tensor* x, int64_t oc, int64_t s, Outputs& outs) {
  Require(x->Rank() == 4, "input must be [N,C,H,W]");
  int64_t n = x->Dim(0), c = x->Dim(1), h = x->Dim(2), w = x->Dim(3);
  Require(oc >= c, "outChannels must be at least the input channels");
  Require(s >= 1, "stride must be positive");
  int64_t oh = (h + s - 1) / s, ow = (w + s - 1) / s, before = (oc - c) / 2;
  Tensor* y = outs.Canon({n, oc, oh, ow});
  memory m = AsLayout(x, Layout::NHWC);
  const float* in = static_cast<const float*>(m.get_data_handle());
  float* out = y->Data();
  std::memset(out, 0, y->md.get_size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        std::memcpy(out + ((b * oh + i) * ow + j) * oc + before, in + ((b * h + i * s) * w + j * s) * c, c * sizeof(float));
  return y;
}

Tensor* ShortcutABackward(Tensor* dy, const dims& in, int64_t s, Outputs& outs) {
  Require(in.size() == 4 && dy->Rank() == 4, "shapes must be [N,C,H,W]");
  Require(s >= 1, "stride must be positive");
  int64_t n = in[0], c = in[1], h = in[2], w = in[3];
  int64_t oc = dy->Dim(1), oh = (h + s - 1) / s, ow = (w + s - 1) / s, before = (oc - c) / 2;
  Require(dy->Dim(0) == n && dy->Dim(2) == oh && dy->Dim(3) == ow && oc >= c, "dy does not match the shortcut output");
  Tensor* dx = outs.Canon(in);
  memory m = AsLayout(dy, Layout::NHWC);
  const float* g = static_cast<const float*>(m.get_data_handle());
  float* out = dx->Data();
  std::memset(out, 0, dx->md.get_size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        std::memcpy(out + ((b * h + i * s) * w + j * s) * c, g + ((b * oh + i) * ow + j) * oc + before, c * sizeof(float));
  return dx;
}

}  // namespace residual
