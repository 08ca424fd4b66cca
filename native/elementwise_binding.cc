// The Node-API face of the elementwise ops (elementwise.h).
#include "elementwise.h"
#include "napi_args.h"

namespace residual {
namespace {

Napi::Value AddJs(const Napi::CallbackInfo& info) {
  Tensor* a = ArgTensor(info, 0);
  Tensor* b = ArgTensor(info, 1);
  JsOutputs outs(info.Env());
  return outs.Obj(Add(a, b, outs));
}

// addRelu(a, b): relu(a + b).
Napi::Value AddReluJs(const Napi::CallbackInfo& info) {
  Tensor* a = ArgTensor(info, 0);
  Tensor* b = ArgTensor(info, 1);
  JsOutputs outs(info.Env());
  return outs.Obj(AddRelu(a, b, outs));
}

// addInPlace(dst, src): dst += src.
Napi::Value AddInPlaceJs(const Napi::CallbackInfo& info) {
  Tensor* dst = ArgTensor(info, 0);
  Tensor* src = ArgTensor(info, 1);
  AddInPlace(dst, src);
  return info.Env().Undefined();
}

Napi::Value ScaleJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  float s = static_cast<float>(ArgNum(info, 1));
  JsOutputs outs(info.Env());
  return outs.Obj(Scale(x, s, outs));
}

Napi::Value ReluJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  JsOutputs outs(info.Env());
  return outs.Obj(Relu(x, outs));
}

// reluBackward(y, dy)
Napi::Value ReluBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* y = ArgTensor(info, 0);
  Tensor* dy = ArgTensor(info, 1);
  JsOutputs outs(info.Env());
  return outs.Obj(ReluBackward(y, dy, outs));
}

}  // namespace

void RegisterElementwise(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "add", AddJs);
  Export(env, exports, "addRelu", AddReluJs);
  Export(env, exports, "addInPlace", AddInPlaceJs);
  Export(env, exports, "scale", ScaleJs);
  Export(env, exports, "relu", ReluJs);
  Export(env, exports, "reluBackward", ReluBackwardJs);
}

}  // namespace residual
