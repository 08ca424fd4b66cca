// Channel plumbing: concat and split along C (ResNeXt forms a and b) and the CIFAR option-A
// shortcut (subsample H and W, zero-pad channels). Plain copy loops on the activation layout.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "napi_args.h"

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

Napi::Value ConcatChannels(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsArray(), "expected an array of tensors");
  Napi::Array arr = info[0].As<Napi::Array>();
  Require(arr.Length() >= 1, "concat needs at least one tensor");
  std::vector<Tensor*> xs;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Tensor* t = TensorOf(info.Env(), arr.Get(i));
    Require(t != nullptr, "concat inputs must be native tensors");
    Require(t->Alive(), "concat input " + std::to_string(i) + " is a disposed tensor");
    xs.push_back(t);
  }
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
  NewT y = NewCanon(info.Env(), shape);
  Geometry go = Geo(shape, y.t->layout);
  float* out = y.t->Data();
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
  return y.obj;
}

Napi::Value SplitChannels(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  dims sizes = ArgSizes(info, 1);
  Require(x->Rank() >= 2, "input must be [N,C,...]");
  int64_t sum = 0;
  for (auto s : sizes) sum += s;
  Require(sum == x->Dim(1), "split sizes must add up to the channel count");
  memory m = AsCanon(x);
  const float* in = static_cast<const float*>(m.get_data_handle());
  Layout l = x->Rank() == 4 ? Layout::NHWC : Layout::Plain;
  Geometry gi = Geo(x->shape, l);
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, sizes.size());
  int64_t off = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    dims shape = x->shape;
    shape[1] = sizes[i];
    NewT y = NewCanon(env, shape);
    int64_t chunk = sizes[i] * gi.inner, row = gi.c * gi.inner;
    float* o = y.t->Data();
    if (chunk > 0)
      for (int64_t r = 0; r < gi.outer; ++r) std::memcpy(o + r * chunk, in + r * row + off * gi.inner, chunk * sizeof(float));
    off += sizes[i];
    out.Set(static_cast<uint32_t>(i), y.obj);
  }
  return out;
}

// shortcutA(x, outChannels, stride)
Napi::Value ShortcutA(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  int64_t oc = ArgInt(info, 1), s = ArgInt(info, 2);
  Require(x->Rank() == 4, "input must be [N,C,H,W]");
  int64_t n = x->Dim(0), c = x->Dim(1), h = x->Dim(2), w = x->Dim(3);
  Require(oc >= c, "outChannels must be at least the input channels");
  Require(s >= 1, "stride must be positive");
  int64_t oh = (h + s - 1) / s, ow = (w + s - 1) / s, before = (oc - c) / 2;
  NewT y = NewCanon(info.Env(), {n, oc, oh, ow});
  memory m = AsLayout(x, Layout::NHWC);
  const float* in = static_cast<const float*>(m.get_data_handle());
  float* out = y.t->Data();
  std::memset(out, 0, y.t->md.get_size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        std::memcpy(out + ((b * oh + i) * ow + j) * oc + before, in + ((b * h + i * s) * w + j * s) * c, c * sizeof(float));
  return y.obj;
}

// shortcutABackward(dy, inputShape, stride)
Napi::Value ShortcutABackward(const Napi::CallbackInfo& info) {
  Tensor* dy = ArgTensor(info, 0);
  dims in = ArgDims(info, 1);
  int64_t s = ArgInt(info, 2);
  Require(in.size() == 4 && dy->Rank() == 4, "shapes must be [N,C,H,W]");
  Require(s >= 1, "stride must be positive");
  int64_t n = in[0], c = in[1], h = in[2], w = in[3];
  int64_t oc = dy->Dim(1), oh = (h + s - 1) / s, ow = (w + s - 1) / s, before = (oc - c) / 2;
  Require(dy->Dim(0) == n && dy->Dim(2) == oh && dy->Dim(3) == ow && oc >= c, "dy does not match the shortcut output");
  NewT dx = NewCanon(info.Env(), in);
  memory m = AsLayout(dy, Layout::NHWC);
  const float* g = static_cast<const float*>(m.get_data_handle());
  float* out = dx.t->Data();
  std::memset(out, 0, dx.t->md.get_size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        std::memcpy(out + ((b * h + i * s) * w + j * s) * c, g + ((b * oh + i) * ow + j) * oc + before, c * sizeof(float));
  return dx.obj;
}

}  // namespace

void RegisterChannels(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "concatChannels", ConcatChannels);
  Export(env, exports, "splitChannels", SplitChannels);
  Export(env, exports, "shortcutA", ShortcutA);
  Export(env, exports, "shortcutABackward", ShortcutABackward);
}

}  // namespace residual
