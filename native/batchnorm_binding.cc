// The Node-API face of batch normalization (batchnorm.h).
#include "batchnorm.h"
#include "napi_args.h"

namespace residual {
namespace {

// gamma, beta, runningMean, runningVar from argument `at` on.
BnParams ArgBn(const Napi::CallbackInfo& info, size_t at) {
  BnParams p;
  p.gamma = ArgTensor(info, at);
  p.beta = ArgTensor(info, at + 1);
  p.running_mean = ArgTensor(info, at + 2);
  p.running_var = ArgTensor(info, at + 3);
  return p;
}

Napi::Value TrainJs(const Napi::CallbackInfo& info, bool relu) {
  Tensor* x = ArgTensor(info, 0);
  BnParams p = ArgBn(info, 1);
  double momentum = ArgNum(info, 5);
  double eps = ArgNum(info, 6);
  JsOutputs outs(info.Env());
  BnTrainResult r = BatchNormTrain(x, p, momentum, eps, relu, outs);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("y", outs.Obj(r.y));
  out.Set("mean", outs.Obj(r.mean));
  out.Set("invStd", outs.Obj(r.inv_std));
  if (relu) out.Set("reluMask", outs.Obj(r.relu_mask));
  return out;
}

// batchNormTrain(x, gamma, beta, runningMean, runningVar, momentum, eps) -> {y, mean, invStd}
Napi::Value BatchNormTrainJs(const Napi::CallbackInfo& info) { return TrainJs(info, false); }

// batchNormReluTrain(x, gamma, beta, runningMean, runningVar, momentum, eps) -> {y, mean, invStd, reluMask}
Napi::Value BatchNormReluTrainJs(const Napi::CallbackInfo& info) { return TrainJs(info, true); }

// batchNormEval(x, gamma, beta, runningMean, runningVar, eps) -> y
Napi::Value BatchNormEvalJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  BnParams p = ArgBn(info, 1);
  double eps = ArgNum(info, 5);
  JsOutputs outs(info.Env());
  return outs.Obj(BatchNormEval(x, p, eps, outs));
}

// batchNormBackward(x, gamma, mean, invStd, dy, reluMask?) -> {dx, dgamma, dbeta}; with reluMask (from
// batchNormReluTrain), dy is the gradient of the fused output.
Napi::Value BatchNormBackwardJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  Tensor* gamma = ArgTensor(info, 1);
  Tensor* mean = ArgTensor(info, 2);
  Tensor* inv = ArgTensor(info, 3);
  Tensor* dy = ArgTensor(info, 4);
  Tensor* relu_mask = info.Length() > 5 ? ArgTensorOrNull(info, 5) : nullptr;
  JsOutputs outs(info.Env());
  BnGrads g = BatchNormBackward(x, gamma, mean, inv, dy, relu_mask, outs);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("dx", outs.Obj(g.dx));
  out.Set("dgamma", outs.Obj(g.dgamma));
  out.Set("dbeta", outs.Obj(g.dbeta));
  return out;
}

}  // namespace

void RegisterBatchNorm(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "batchNormTrain", BatchNormTrainJs);
  Export(env, exports, "batchNormReluTrain", BatchNormReluTrainJs);
  Export(env, exports, "batchNormEval", BatchNormEvalJs);
  Export(env, exports, "batchNormBackward", BatchNormBackwardJs);
}

}  // namespace residual
