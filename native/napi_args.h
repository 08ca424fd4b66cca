// The Node-API boundary of the ops: reading arguments into C++ values (each op family's binding
// file parses its arguments into a parameter struct once, with these), exporting an op so that
// oneDNN and C++ exceptions become JS Errors naming it, and the JS objects of the tensors it returns.
#pragma once

#include <napi.h>

#include <vector>

#include "outputs.h"
#include "tensor_js.h"

namespace residual {

Tensor* ArgTensor(const Napi::CallbackInfo& info, size_t i);
Tensor* ArgTensorOrNull(const Napi::CallbackInfo& info, size_t i);
int64_t ArgInt(const Napi::CallbackInfo& info, size_t i);
double ArgNum(const Napi::CallbackInfo& info, size_t i);
bool ArgBool(const Napi::CallbackInfo& info, size_t i);
dims ArgDims(const Napi::CallbackInfo& info, size_t i);
// A list of sizes that is not a shape (e.g. the channel counts of a split): any length.
dims ArgSizes(const Napi::CallbackInfo& info, size_t i);

using OpFn = Napi::Value (*)(const Napi::CallbackInfo&);
// Exports `fn` as `name`: it runs under GlobalLock, after the deferred frees of its environment.
void Export(Napi::Env env, Napi::Object exports, const char* name, OpFn fn);

// Outputs made as JS tensor objects of this environment, kept so that the binding can return them.
class JsOutputs final : public Outputs {
 public:
  explicit JsOutputs(Napi::Env env) : env_(env) {}
  Tensor* New(const dims& shape, Layout layout, const memory::desc& md) override;
  // The JS object of a tensor made here.
  Napi::Object Obj(const Tensor* t) const;
  // {dx?, dw?, db?}: the gradients that were computed.
  Napi::Object Obj(const Grads& g) const;

 private:
  Napi::Env env_;
  std::vector<NewT> made_;
};

// The registration of each op family (addon.cc).
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
