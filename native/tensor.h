// The tensor: a native buffer (allocator.h) with its shape and layout, plus the descriptors and
// layout conversions every op uses. No Node-API here: the JS object that carries a tensor is
// tensor_js.h.
#pragma once

#include <initializer_list>
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
  // The values as floats: f32 tensors only. A bf16 activation (mixed-precision training) throws
  // here instead of being misread; ops that take bf16 read `mem` or go through AsLayout.
  float* Data() const;
  dt Type() const { return md.data_type(); }
  bool Bf16() const { return md.data_type() == dt::bf16; }
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

// Descriptors (f32 unless `type` says otherwise).
memory::desc PlainMd(const dims& shape, dt type = dt::f32);  // row-major; rank 0 becomes {1}
memory::desc NhwcMd(const dims& shape, dt type = dt::f32);
memory::desc CanonMd(const dims& shape, Layout* layout);  // NHWC for rank 4, plain otherwise
int64_t Product(const dims& d);

// The tensor's values as an f32 memory in the given layout: the tensor's own memory when it already
// is, else a temporary reordered copy (edges: inputs that came from fromArray; bf16 activations
// reaching an op that computes in f32 only).
memory AsLayout(Tensor* t, Layout layout);
memory AsCanon(Tensor* t);
// The same in `layout`, or the canonical one (NHWC for rank 4), and data type `type`: for ops that
// run in bf16 too.
memory AsLayoutOf(Tensor* t, Layout layout, dt type);
memory AsCanonOf(Tensor* t, dt type);
// The canonical descriptor of `shape` in data type `type`.
memory::desc CanonMdOf(const dims& shape, dt type);
// bf16 when any of the tensors is (the activations of mixed-precision training flow in bf16), else f32.
dt ActivationType(std::initializer_list<const Tensor*> ts);

// Copies between a tensor and a dense row-major float buffer of its element count, whatever the
// tensor's layout and data type (the edges of JS: fromArray, read, reshape).
void CopyFromRowMajor(Tensor* t, const float* src);
void CopyToRowMajor(const Tensor& t, float* dst);
void FillZero(Tensor* t);
// A reshape that keeps the shape of an NHWC tensor keeps its layout and data type: a byte copy.
bool ReshapeKeepsLayout(const Tensor& x, const dims& shape);
void CopyBytes(const Tensor& src, Tensor* dst);

}  // namespace residual
