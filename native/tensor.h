// The tensor: a native buffer (allocator.h) with its shape and layout, plus the descriptors and
// layout conversions every op uses. No Node-API here: the JS object that carries a tensor is
// tensor_js.h.
#pragma once

#include <vector>

#include "allocator.h"
#include "engine.h"

namespace residual {

// Every tensor is either plain row-major (any rank), NHWC (4-D activations), or an opaque oneDNN
// buffer (pooling workspace). Plain and NHWC tensors are dense, so elementwise loops run over the
// raw buffer when two tensors share a layout.
enum class Layout { Plain, NHWC, Opaque };

// The native side of a JS tensor object (tensor_js.h), which deletes it on dispose() or in its GC
// finalizer.
class Tensor {
 public:
  Tensor() = default;
  ~Tensor();
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // Allocates `md` (or wraps nothing for zero elements) and attaches it.
  void Allocate(const dims& shape, Layout layout, const memory::desc& md);
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
  void AdjustMem(int64_t delta);
};

// Descriptors.
memory::desc PlainMd(const dims& shape);  // row-major; rank 0 becomes {1}
memory::desc NhwcMd(const dims& shape);
memory::desc CanonMd(const dims& shape, Layout* layout);  // NHWC for rank 4, plain otherwise
int64_t Product(const dims& d);

// The tensor's values as a memory in the given layout: the tensor's own memory when it already is,
// else a temporary reordered copy (edges only: inputs that came from fromArray).
memory AsLayout(Tensor* t, Layout layout);
memory AsCanon(Tensor* t);

// Copies between a tensor and a dense row-major float buffer of its element count, whatever the
// tensor's layout (the edges of JS: fromArray, read, reshape).
void CopyFromRowMajor(Tensor* t, const float* src);
void CopyToRowMajor(const Tensor& t, float* dst);
void FillZero(Tensor* t);
// A reshape that keeps the shape of an NHWC tensor keeps its layout: a byte copy.
bool ReshapeKeepsLayout(const Tensor& x, const dims& shape);
void CopyBytes(const Tensor& src, Tensor* dst);

}  // namespace residual
