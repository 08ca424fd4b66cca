// The JS tensor class: a native buffer (allocator.h) with its shape and layout, wrapped in a JS
// object, plus the descriptors and layout conversions every op uses.
#pragma once

#include <napi.h>

#include "allocator.h"
#include "engine.h"

namespace residual {

// Every tensor is either plain row-major (any rank), NHWC (4-D activations), or an opaque oneDNN
// buffer (pooling workspace). Plain and NHWC tensors are dense, so elementwise loops run over the
// raw buffer when two tensors share a layout.
enum class Layout { Plain, NHWC, Opaque };

// The native side of a JS tensor object, attached with napi_wrap. dispose() frees the buffers AND
// removes the wrap (napi_remove_wrap) and deletes this object at once, so a disposed tensor leaves
// nothing waiting for a GC finalizer (Node runs those only when the event loop turns: a synchronous
// training loop would otherwise pile up one pending object per tensor). Tensors that are never
// disposed are freed by the finalizer.
class Tensor {
 public:
  // The class constructor of this environment (each worker thread has its own).
  static Napi::Function Ctor(Napi::Env env);
  static Napi::Function Init(Napi::Env env);
  explicit Tensor(napi_env env) : env_(env) {}
  ~Tensor();
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  // Frees the tensor behind `obj` now (no-op when already disposed).
  static void DisposeObject(napi_env env, napi_value obj);

  // Allocates `md` (or wraps nothing for zero elements) and attaches it.
  void Allocate(Napi::Env env, const dims& shape, Layout layout, const memory::desc& md);
  void Release();
  bool Alive() const { return alive_; }
  float* Data() const { return static_cast<float*>(mem.get_data_handle()); }
  int64_t Numel() const;
  int64_t Dim(int i) const { return shape[i]; }
  int Rank() const { return static_cast<int>(shape.size()); }
  size_t Bytes() const;

  // Converts this tensor's storage to `layout` in place (same values, new memory).
  void Relayout(Layout layout);

  // A copy of this tensor's values in the layout `want` (reordered into `md`), cached on the tensor
  // and valid until the tensor is mutated (version bump). Used for weights in a primitive's format.
  memory Derived(const memory::desc& src_view, const memory::desc& want);
  void Touch() { ++version; }

  dims shape;
  Layout layout = Layout::Plain;
  memory::desc md;
  memory mem;
  uint64_t version = 0;

 private:
  struct DerivedCopy {
    memory::desc md;
    memory mem;
    uint64_t version;
    size_t bytes;
    void* buf;
  };
  void* buf_ = nullptr;  // pooled buffer behind `mem`
  std::vector<DerivedCopy> derived_;
  size_t derived_bytes_ = 0;
  bool alive_ = false;
  napi_env env_ = nullptr;
  void AdjustMem(int64_t delta);
};

// Descriptors.
memory::desc PlainMd(const dims& shape);  // row-major; rank 0 becomes {1}
memory::desc NhwcMd(const dims& shape);
memory::desc CanonMd(const dims& shape, Layout* layout);  // NHWC for rank 4, plain otherwise
int64_t Product(const dims& d);

// A new tensor object (the JS value) and its C++ side.
struct NewT {
  Napi::Object obj;
  Tensor* t;
};
NewT NewTensor(Napi::Env env, const dims& shape, Layout layout, const memory::desc& md);
NewT NewCanon(Napi::Env env, const dims& shape);  // NHWC for rank 4, plain otherwise
NewT NewPlain(Napi::Env env, const dims& shape);

// The tensor's values as a memory in the given layout: the tensor's own memory when it already is,
// else a temporary reordered copy (edges only: inputs that came from fromArray).
memory AsLayout(Tensor* t, Layout layout);
memory AsCanon(Tensor* t);

// The tensor behind `v`, or null when `v` is not a live tensor made by this environment's class.
Tensor* TensorOf(Napi::Env env, Napi::Value v);
// Whether `v` is an instance of this environment's tensor class (disposed or not).
bool IsTensorObject(Napi::Env env, Napi::Value v);

}  // namespace residual
