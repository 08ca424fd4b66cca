// The tensor class: its buffers and derived weight copies, layout changes. The JS class that
// carries it is tensor_js.cc.
#include "tensor.h"

#include <algorithm>
#include <cstring>

namespace residual {

// ---------------------------------------------------------------- descriptors

int64_t Product(const dims& d) {
  int64_t p = 1;
  for (auto v : d) p *= v;
  return p;
}

memory::desc PlainMd(const dims& shape, dt type) {
  if (shape.empty()) return memory::desc({1}, type, tag::a);
  dims strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return memory::desc(shape, type, strides);
}

memory::desc NhwcMd(const dims& shape, dt type) { return memory::desc(shape, type, tag::nhwc); }

memory::desc CanonMdOf(const dims& shape, dt type) {
  return shape.size() == 4 ? NhwcMd(shape, type) : PlainMd(shape, type);
}

memory::desc CanonMd(const dims& shape, Layout* layout) {
  if (shape.size() == 4) {
    *layout = Layout::NHWC;
    return NhwcMd(shape);
  }
  *layout = Layout::Plain;
  return PlainMd(shape);
}

// ---------------------------------------------------------------- tensor

Tensor::~Tensor() {
  // Runs on dispose (after napi_remove_wrap) or from the GC finalizer, always under GlobalLock.
  try {
    Release();
  } catch (...) {
  }
}

int64_t Tensor::Numel() const { return Product(shape); }

float* Tensor::Data() const {
  Require(md.data_type() == dt::f32, "this op reads f32 values but got a bf16 tensor (an activation of bf16 training)");
  return static_cast<float*>(mem.get_data_handle());
}

size_t Tensor::Bytes() const {
  if (!alive_) return 0;
  return md.get_size() + derived_bytes_;
}

void Tensor::AdjustMem(int64_t delta) { CountLiveBytes(delta); }

void Tensor::Allocate(const dims& shp, Layout lay, const memory::desc& d) {
  shape = shp;
  layout = lay;
  md = d;
  size_t bytes = md.get_size();
  mem = PooledMemory(md, &buf_);
  alive_ = true;
  ++LiveTensors();
  AdjustMem(static_cast<int64_t>(bytes));
}

void Tensor::Release() {
  if (!alive_) return;
  size_t bytes = md.get_size() + derived_bytes_;
  for (auto& d : derived_) PoolFree(d.buf, d.bytes);
  derived_.clear();
  derived_bytes_ = 0;
  mem = memory();
  PoolFree(buf_, md.get_size());
  buf_ = nullptr;
  alive_ = false;
  --LiveTensors();
  AdjustMem(-static_cast<int64_t>(bytes));
}

void Tensor::Relayout(Layout want) {
  if (want == layout) return;
  Require(want != Layout::Opaque && layout != Layout::Opaque, "cannot change the layout of an opaque tensor");
  Require(want != Layout::NHWC || shape.size() == 4, "NHWC needs a 4-D tensor");
  memory::desc nmd = want == Layout::NHWC ? NhwcMd(shape, Type()) : PlainMd(shape, Type());
  void* nbuf = nullptr;
  memory nmem = PooledMemory(nmd, &nbuf);
  if (Numel() > 0) Reorder(mem, nmem);
  size_t old = md.get_size();
  PoolFree(buf_, old);
  buf_ = nbuf;
  mem = nmem;
  md = nmd;
  layout = want;
  AdjustMem(static_cast<int64_t>(nmd.get_size()) - static_cast<int64_t>(old));
}

memory Tensor::Derived(const memory::desc& src_view, const memory::desc& want) {
  if (want == src_view) return memory(src_view, Eng(), mem.get_data_handle());
  for (auto& d : derived_) {
    if (d.md == want) {
      if (d.version != version) {
        Reorder(memory(src_view, Eng(), mem.get_data_handle()), d.mem);
        d.version = version;
      }
      return d.mem;
    }
  }
  if (derived_.size() >= 3) {
    derived_bytes_ -= derived_.front().bytes;
    AdjustMem(-static_cast<int64_t>(derived_.front().bytes));
    PoolFree(derived_.front().buf, derived_.front().bytes);
    derived_.erase(derived_.begin());
  }
  DerivedCopy d{want, memory(), version, want.get_size(), nullptr};
  d.mem = PooledMemory(want, &d.buf);
  Reorder(memory(src_view, Eng(), mem.get_data_handle()), d.mem);
  derived_bytes_ += d.bytes;
  AdjustMem(static_cast<int64_t>(d.bytes));
  derived_.push_back(d);
  return d.mem;
}

memory AsLayoutOf(Tensor* t, Layout layout, dt type) {
  if (t->layout == layout && t->Type() == type) return t->mem;
  Require(t->layout != Layout::Opaque, "an opaque tensor (a pooling argmax) was passed where values are expected");
  memory::desc want = layout == Layout::NHWC ? NhwcMd(t->shape, type) : PlainMd(t->shape, type);
  memory out(want, Eng());
  if (t->Numel() > 0) Reorder(t->mem, out);
  return out;
}

memory AsLayout(Tensor* t, Layout layout) { return AsLayoutOf(t, layout, dt::f32); }

memory AsCanon(Tensor* t) { return AsLayout(t, t->Rank() == 4 ? Layout::NHWC : Layout::Plain); }

memory AsCanonOf(Tensor* t, dt type) { return AsLayoutOf(t, t->Rank() == 4 ? Layout::NHWC : Layout::Plain, type); }

dt ActivationType(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->Bf16()) return dt::bf16;
  return dt::f32;
}

void CopyFromRowMajor(Tensor* t, const float* src) {
  if (t->Numel() > 0) std::memcpy(t->Data(), src, static_cast<size_t>(t->Numel()) * sizeof(float));
}

void CopyToRowMajor(const Tensor& t, float* dst) {
  if (t.Numel() == 0) return;
  // NHWC with H*W == 1 or C == 1 has the same bytes as NCHW (e.g. the pooled features before the head).
  bool same_bytes = t.Type() == dt::f32 &&
                    (t.layout == Layout::Plain || (t.layout == Layout::NHWC && (t.Dim(2) * t.Dim(3) == 1 || t.Dim(1) == 1)));
  if (same_bytes) {
    std::memcpy(dst, t.Data(), static_cast<size_t>(t.Numel()) * sizeof(float));
    return;
  }
  memory out(PlainMd(t.shape), Eng(), dst);
  Reorder(t.mem, out);  // from any layout, and from bf16 (widened to f32)
  Strm().wait();
}

void FillZero(Tensor* t) {
  if (t->Numel() > 0) std::memset(t->mem.get_data_handle(), 0, t->md.get_size());  // zero bits are 0 in f32 and bf16
}

bool ReshapeKeepsLayout(const Tensor& x, const dims& shape) { return x.layout == Layout::NHWC && shape == x.shape; }

void CopyBytes(const Tensor& src, Tensor* dst) {
  Require(dst->md.get_size() == src.md.get_size(), "a byte copy needs the same layout and data type");
  if (src.Numel() > 0) std::memcpy(dst->mem.get_data_handle(), src.mem.get_data_handle(), src.md.get_size());
}

}  // namespace residual
