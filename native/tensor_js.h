// The JS class that carries a Tensor (napi_wrap). dispose() frees the buffers AND removes the wrap
// (napi_remove_wrap) and deletes the Tensor at once, so a disposed tensor leaves nothing waiting for
// a GC finalizer (Node runs those only when the event loop turns: a synchronous training loop would
// otherwise pile up one pending object per tensor). Tensors never disposed are freed by the finalizer.
#pragma once

#include <napi.h>

#include "tensor.h"

namespace residual {

// Defines the class for this environment (each worker thread has its own) and returns it.
Napi::Function InitTensorClass(Napi::Env env);
// The class constructor of this environment.
Napi::Function TensorClass(Napi::Env env);
// Frees the tensor behind `obj` now (no-op when already disposed).
void DisposeTensorObject(napi_env env, napi_value obj);

// A new tensor object (the JS value) and its C++ side.
struct NewT {
  Napi::Object obj;
  Tensor* t;
};
NewT NewTensor(Napi::Env env, const dims& shape, Layout layout, const memory::desc& md);
NewT NewCanon(Napi::Env env, const dims& shape);  // NHWC for rank 4, plain otherwise
NewT NewPlain(Napi::Env env, const dims& shape);

// The tensor behind `v`, or null when `v` is not a live tensor made by this environment's class.
Tensor* TensorOf(Napi::Env env, Napi::Value v);
// Whether `v` is an instance of this environment's tensor class (disposed or not).
bool IsTensorObject(Napi::Env env, Napi::Value v);

}  // namespace residual
