// The tensor class: its buffers and derived weight copies, layout changes, and the JS class
// (constructor, dispose, finalizer, accessors) that carries it.
#include "tensor.h"

#include <algorithm>

namespace residual {

// ---------------------------------------------------------------- descriptors

int64_t Product(const dims& d) {
  int64_t p = 1;
  for (auto v : d) p *= v;
  return p;
}

memory::desc PlainMd(const dims& shape) {
  if (shape.empty()) return memory::desc({1}, dt::f32, tag::a);
  dims strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return memory::desc(shape, dt::f32, strides);
}

memory::desc NhwcMd(const dims& shape) { return memory::desc(shape, dt::f32, tag::nhwc); }

memory::desc CanonMd(const dims& shape, Layout* layout) {
  if (shape.size() == 4) {
    *layout = Layout::NHWC;
    return NhwcMd(shape);
  }
  *layout = Layout::Plain;
  return PlainMd(shape);
}

// ---------------------------------------------------------------- tensor

namespace {
struct InstanceData {
  Napi::FunctionReference ctor;
};
}  // namespace

Napi::Function Tensor::Ctor(Napi::Env env) { return env.GetInstanceData<InstanceData>()->ctor.Value(); }

namespace {

// The tensor wrapped in `v` (null when none: disposed, or not made by our constructor).
Tensor* Wrapped(napi_env env, napi_value v) {
  void* p = nullptr;
  if (napi_unwrap(env, v, &p) != napi_ok) return nullptr;
  return static_cast<Tensor*>(p);
}

void FinalizeTensor(napi_env env, void* data, void* /*hint*/) {
  auto* t = static_cast<Tensor*>(data);
  RunWhenEngineFree(env, [t]() { delete t; });
}

napi_value JsConstruct(napi_env env, napi_callback_info cb) {
  napi_value self;
  if (napi_get_cb_info(env, cb, nullptr, nullptr, &self, nullptr) != napi_ok) return nullptr;
  auto* t = new Tensor(env);
  if (napi_wrap(env, self, t, FinalizeTensor, nullptr, nullptr) != napi_ok) {
    delete t;
    napi_throw_error(env, nullptr, "native tensor: cannot attach native state");
    return nullptr;
  }
  return self;
}

napi_value This(napi_env env, napi_callback_info cb) {
  napi_value self = nullptr;
  napi_get_cb_info(env, cb, nullptr, nullptr, &self, nullptr);
  return self;
}

napi_value JsDispose(napi_env env, napi_callback_info cb) {
  // No lock here: DisposeObject frees under the lock when it is free and defers otherwise, so
  // disposing (tidy, the FinalizationRegistry backstop) never waits for an asynchronous run.
  Tensor::DisposeObject(env, This(env, cb));
  napi_value undef;
  napi_get_undefined(env, &undef);
  return undef;
}

napi_value JsDisposed(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  napi_value r;
  napi_get_boolean(env, t == nullptr || !t->Alive(), &r);
  return r;
}

napi_value JsByteSize(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  napi_value r;
  napi_create_double(env, t ? static_cast<double>(t->Bytes()) : 0.0, &r);
  return r;
}

napi_value JsLayout(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  const char* s = t == nullptr || !t->Alive() ? "disposed"
                  : t->layout == Layout::NHWC ? "nhwc"
                  : t->layout == Layout::Plain ? "plain" : "opaque";
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

}  // namespace

void Tensor::DisposeObject(napi_env env, napi_value obj) {
  void* p = nullptr;
  if (napi_remove_wrap(env, obj, &p) == napi_ok && p != nullptr) {
    auto* t = static_cast<Tensor*>(p);
    RunWhenEngineFree(env, [t]() { delete t; });
  }
}

Napi::Function Tensor::Init(Napi::Env env) {
  const napi_property_attributes acc = static_cast<napi_property_attributes>(napi_enumerable | napi_configurable);
  napi_property_descriptor props[] = {
      {"dispose", nullptr, JsDispose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"disposed", nullptr, nullptr, JsDisposed, nullptr, nullptr, acc, nullptr},
      {"byteSize", nullptr, nullptr, JsByteSize, nullptr, nullptr, acc, nullptr},
      {"layout", nullptr, nullptr, JsLayout, nullptr, nullptr, acc, nullptr},
  };
  napi_value cls;
  NAPI_THROW_IF_FAILED(env, napi_define_class(env, "NativeTensor", NAPI_AUTO_LENGTH, JsConstruct, nullptr,
                                              sizeof(props) / sizeof(props[0]), props, &cls),
                       Napi::Function());
  Napi::Function f(env, cls);
  auto* data = new InstanceData();
  data->ctor = Napi::Persistent(f);
  env.SetInstanceData<InstanceData>(data);
  return f;
}

Tensor::~Tensor() {
  // Runs on dispose (after napi_remove_wrap) or from the GC finalizer, always under GlobalLock.
  try {
    Release();
  } catch (...) {
  }
}

int64_t Tensor::Numel() const { return Product(shape); }

size_t Tensor::Bytes() const {
  if (!alive_) return 0;
  return md.get_size() + derived_bytes_;
}

void Tensor::AdjustMem(int64_t delta) { CountLiveBytes(delta); }

void Tensor::Allocate(Napi::Env env, const dims& shp, Layout lay, const memory::desc& d) {
  env_ = env;
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
  memory::desc nmd = want == Layout::NHWC ? NhwcMd(shape) : PlainMd(shape);
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

NewT NewTensor(Napi::Env env, const dims& shape, Layout layout, const memory::desc& md) {
  Napi::Object obj = Tensor::Ctor(env).New({});
  Tensor* t = Wrapped(env, obj);
  Require(t != nullptr, "cannot create a tensor object");
  t->Allocate(env, shape, layout, md);
  Napi::Array arr = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  arr.Freeze();
  obj.DefineProperty(Napi::PropertyDescriptor::Value("shape", arr, napi_enumerable));
  return {obj, t};
}

NewT NewCanon(Napi::Env env, const dims& shape) {
  Layout l;
  memory::desc md = CanonMd(shape, &l);
  return NewTensor(env, shape, l, md);
}

NewT NewPlain(Napi::Env env, const dims& shape) { return NewTensor(env, shape, Layout::Plain, PlainMd(shape)); }

memory AsLayout(Tensor* t, Layout layout) {
  if (t->layout == layout) return t->mem;
  Require(t->layout != Layout::Opaque, "an opaque tensor (a pooling argmax) was passed where values are expected");
  memory::desc want = layout == Layout::NHWC ? NhwcMd(t->shape) : PlainMd(t->shape);
  memory out(want, Eng());
  if (t->Numel() > 0) Reorder(t->mem, out);
  return out;
}

memory AsCanon(Tensor* t) { return AsLayout(t, t->Rank() == 4 ? Layout::NHWC : Layout::Plain); }

// The tensor behind `v`, or null when `v` is not a tensor made by this environment (including an
// object that merely has the tensor prototype).
bool IsTensorObject(Napi::Env env, Napi::Value v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(Tensor::Ctor(env));
}

Tensor* TensorOf(Napi::Env env, Napi::Value v) {
  if (!IsTensorObject(env, v)) return nullptr;
  return Wrapped(env, v);
}

}  // namespace residual
