// The Node-API face of convolution (conv.h): the geometry arguments parsed into ConvParams.
#include <string>

#include "conv.h"
#include "napi_args.h"

namespace residual {
namespace {

// sh, sw, ph, pw, dh, dw, groups from argument `at` on.
ConvParams ArgConv(const Napi::CallbackInfo& info, size_t at) {
  ConvParams p;
  p.sh = ArgInt(info, at); p.sw = ArgInt(info, at + 1);
  p.ph = ArgInt(info, at + 2); p.pw = ArgInt(info, at + 3);
  p.dh = ArgInt(info, at + 4); p.dw = ArgInt(info, at + 5);
  p.groups = ArgInt(info, at + 6);
  return p;
}

// conv2d(x, w, b|null, sh, sw, ph, pw, dh, dw, groups, bf16?)
Napi::Value Conv2dJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* b = ArgTensorOrNull(info, 2);
  ConvParams p = ArgConv(info, 3);
  p.bf16 = info.Length() > 10 && ArgBool(info, 10);
  JsOutputs outs(info.Env());
  return outs.Obj(Conv2d(x, w, b, p, outs));
}

// conv2dBackward(x, w, dy, sh, sw, ph, pw, dh, dw, groups, needInput, needWeight, needBias, bf16?)
Napi::Value Conv2dBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* dy = ArgTensor(info, 2);
  ConvParams p = ArgConv(info, 3);
  GradsWanted want;
  want.input = ArgBool(info, 10), want.weight = ArgBool(info, 11), want.bias = ArgBool(info, 12);
  p.bf16 = info.Length() > 13 && ArgBool(info, 13);
  JsOutputs outs(info.Env());
  return outs.Obj(Conv2dBackward(x, w, dy, p, want, outs));
}

// setConvLayout('nhwc' | 'any')
Napi::Value SetConvLayoutJs(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsString(), "expected 'nhwc' or 'any'");
  std::string v = info[0].As<Napi::String>().Utf8Value();
  Require(v == "nhwc" || v == "any", "expected 'nhwc' or 'any'");
  SetConvLayoutAny(v == "any");
  return info.Env().Undefined();
}

}  // namespace

void RegisterConv(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "conv2d", Conv2dJs);
  Export(env, exports, "conv2dBackward", Conv2dBackwardJs);
  Export(env, exports, "setConvLayout", SetConvLayoutJs);
}

}  // namespace residual
