// The Node-API face of the linear layer and the loss (linear_loss.h).
#include "linear_loss.h"
#include "napi_args.h"

namespace residual {
namespace {

// An Int32Array of class indices (its values are checked by the op).
Labels ArgLabels(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsTypedArray(), "labels must be an Int32Array");
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  Require(ta.TypedArrayType() == napi_int32_array, "labels must be an Int32Array");
  Napi::Int32Array a = ta.As<Napi::Int32Array>();
  return {a.Data(), static_cast<int64_t>(a.ElementLength())};
}

// linear(x, w, b) -> y
Napi::Value LinearJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* b = ArgTensorOrNull(info, 2);
  JsOutputs outs(info.Env());
  return outs.Obj(Linear(x, w, b, outs));
}

// linearBackward(x, w, dy, needInput, needWeight, needBias) -> {dx?, dw?, db?}
Napi::Value LinearBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* w = ArgTensor(info, 1);
  Tensor* dy = ArgTensor(info, 2);
  GradsWanted want;
  want.input = ArgBool(info, 3), want.weight = ArgBool(info, 4), want.bias = ArgBool(info, 5);
  JsOutputs outs(info.Env());
  return outs.Obj(LinearBackward(x, w, dy, want, outs));
}

// crossEntropy(logits [N,K], labels, labelSmoothing) -> {loss [], probs [N,K]}
Napi::Value CrossEntropyJs(const Napi::CallbackInfo& info) {
  Tensor* logits = ArgTensor(info, 0);
  Labels labels = ArgLabels(info, 1);
  double eps = ArgNum(info, 2);
  JsOutputs outs(info.Env());
  CrossEntropyResult r = CrossEntropy(logits, labels, eps, outs);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("loss", outs.Obj(r.loss));
  out.Set("probs", outs.Obj(r.probs));
  return out;
}

// crossEntropyBackward(probs, labels, labelSmoothing, gradScale) -> dlogits
Napi::Value CrossEntropyBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* probs = ArgTensor(info, 0);
  Labels labels = ArgLabels(info, 1);
  double eps = ArgNum(info, 2);
  double grad_scale = ArgNum(info, 3);
  JsOutputs outs(info.Env());
  return outs.Obj(CrossEntropyBackward(probs, labels, eps, grad_scale, outs));
}

}  // namespace

void RegisterLinearLoss(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "linear", LinearJs);
  Export(env, exports, "linearBackward", LinearBackwardJs);
  Export(env, exports, "crossEntropy", CrossEntropyJs);
  Export(env, exports, "crossEntropyBackward", CrossEntropyBackwardJs);
}

}  // namespace residual
