// The Node-API boundary of the ops: reading arguments into C++ values (each op file parses its
// arguments into a parameter struct once, with these), and exporting an op so that oneDNN and C++
// exceptions become JS Errors naming it.
#pragma once

#include <napi.h>

#include "tensor.h"

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

}  // namespace residual
