// The Node-API face of the optimizer: arguments parsed into SgdParams (optimizer.h).
#include "napi_args.h"
#include "optimizer.h"

namespace residual {
namespace {

// sgdStep(param, grad, momentumBuffer|null, firstStep, lr, momentum, dampening, weightDecay, nesterov)
Napi::Value SgdStepJs(const Napi::CallbackInfo& info) {
  Tensor* p = ArgTensor(info, 0);
  Tensor* g = ArgTensor(info, 1);
  Tensor* buf = ArgTensorOrNull(info, 2);
  SgdParams s;
  s.first_step = ArgBool(info, 3);
  s.lr = static_cast<float>(ArgNum(info, 4));
  s.momentum = static_cast<float>(ArgNum(info, 5));
  s.dampening = static_cast<float>(ArgNum(info, 6));
  s.weight_decay = static_cast<float>(ArgNum(info, 7));
  s.nesterov = ArgBool(info, 8);
  SgdStep(p, g, buf, s);
  return info.Env().Undefined();
}

}  // namespace

void RegisterOptimizer(Napi::Env env, Napi::Object exports) { Export(env, exports, "sgdStep", SgdStepJs); }

}  // namespace residual
