// The Node-API face of pooling (pooling.h): the window arguments parsed into PoolParams.
#include "napi_args.h"
#include "pooling.h"

namespace residual {
namespace {

// kh, kw, sh, sw, ph, pw, ceil from argument `at` on.
PoolParams ArgPool(const Napi::CallbackInfo& info, size_t at) {
  PoolParams p;
  p.kh = ArgInt(info, at); p.kw = ArgInt(info, at + 1);
  p.sh = ArgInt(info, at + 2); p.sw = ArgInt(info, at + 3);
  p.ph = ArgInt(info, at + 4); p.pw = ArgInt(info, at + 5);
  p.ceil = ArgBool(info, at + 6);
  return p;
}

// maxPool2d(x, kh, kw, sh, sw, ph, pw, ceil) -> {y, argmax}
Napi::Value MaxPool2dJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  PoolParams p = ArgPool(info, 1);
  JsOutputs outs(info.Env());
  MaxPoolResult r = MaxPool2d(x, p, outs);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("y", outs.Obj(r.y));
  out.Set("argmax", outs.Obj(r.argmax));
  return out;
}

// maxPool2dBackward(x, argmax, dy, kh, kw, sh, sw, ph, pw, ceil) -> dx
Napi::Value MaxPool2dBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* ws = ArgTensor(info, 1);
  Tensor* dy = ArgTensor(info, 2);
  PoolParams p = ArgPool(info, 3);
  JsOutputs outs(info.Env());
  return outs.Obj(MaxPool2dBackward(x, ws, dy, p, outs));
}

// avgPool2d(x, kh, kw, sh, sw, ph, pw, ceil, countIncludePad) -> y
Napi::Value AvgPool2dJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  PoolParams p = ArgPool(info, 1);
  bool include_pad = ArgBool(info, 8);
  JsOutputs outs(info.Env());
  return outs.Obj(AvgPool2d(x, p, include_pad, outs));
}

// avgPool2dBackward(dy, inputShape, kh, kw, sh, sw, ph, pw, ceil, countIncludePad) -> dx
Napi::Value AvgPool2dBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* dy = ArgTensor(info, 0);
  dims in = ArgDims(info, 1);
  PoolParams p = ArgPool(info, 2);
  bool include_pad = ArgBool(info, 9);
  JsOutputs outs(info.Env());
  return outs.Obj(AvgPool2dBackward(dy, in, p, include_pad, outs));
}

Napi::Value GlobalAvgPoolJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  JsOutputs outs(info.Env());
  return outs.Obj(GlobalAvgPool(x, outs));
}

// globalAvgPoolBackward(dy, inputShape) -> dx
Napi::Value GlobalAvgPoolBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* dy = ArgTensor(info, 0);
  dims in = ArgDims(info, 1);
  JsOutputs outs(info.Env());
  return outs.Obj(GlobalAvgPoolBackward(dy, in, outs));
}

}  // namespace

void RegisterPooling(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "maxPool2d", MaxPool2dJs);
  Export(env, exports, "maxPool2dBackward", MaxPool2dBackwardJs);
  Export(env, exports, "avgPool2d", AvgPool2dJs);
  Export(env, exports, "avgPool2dBackward", AvgPool2dBackwardJs);
  Export(env, exports, "globalAvgPool", GlobalAvgPoolJs);
  Export(env, exports, "globalAvgPoolBackward", GlobalAvgPoolBackwardJs);
}

}  // namespace residual
