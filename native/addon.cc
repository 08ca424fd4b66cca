// The addon entry: registers the tensor class and every op family.
#include "common.h"
#include "napi_args.h"

namespace residual {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterTensorOps(env, exports);
  RegisterConv(env, exports);
  RegisterBatchNorm(env, exports);
  RegisterPooling(env, exports);
  RegisterElementwise(env, exports);
  RegisterLinearLoss(env, exports);
  RegisterChannels(env, exports);
  RegisterOptimizer(env, exports);
  RegisterInference(env, exports);
  return exports;
}

}  // namespace residual

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return residual::Init(env, exports); }

NODE_API_MODULE(residual_native, InitAddon)
