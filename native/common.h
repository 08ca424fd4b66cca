// What every op file includes: the engine, the allocator, the tensor class and the argument parsing
// at the Node-API boundary, and the registration of each op family (addon.cc).
#pragma once

#include "allocator.h"
#include "engine.h"
#include "napi_args.h"
#include "tensor.h"

namespace residual {

void RegisterTensorOps(Napi::Env env, Napi::Object exports);
void RegisterConv(Napi::Env env, Napi::Object exports);
void RegisterBatchNorm(Napi::Env env, Napi::Object exports);
void RegisterPooling(Napi::Env env, Napi::Object exports);
void RegisterElementwise(Napi::Env env, Napi::Object exports);
void RegisterLinearLoss(Napi::Env env, Napi::Object exports);
void RegisterChannels(Napi::Env env, Napi::Object exports);
void RegisterOptimizer(Napi::Env env, Napi::Object exports);
void RegisterInference(Napi::Env env, Napi::Object exports);

}  // namespace residual
