// The tensor object, the engine, the scratchpad, argument parsing and the memory ops
// (fromArray, read, zeros, reshape, dispose, byteSize) plus info/stats.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace residual {

// ---------------------------------------------------------------- engine, stream, scratchpad

// The engine, stream, caches and pool are created once and never destroyed: tensors finalized while
// Node tears an environment down must never meet an already-destroyed global.
dnnl::engine& Eng() {
  static dnnl::engine& eng = *new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return eng;
}
dnnl::stream& Strm() {
  static dnnl::stream& s = *new dnnl::stream(Eng());
  return s;
}

namespace {
struct Scratch {
  void* ptr = nullptr;
  size_t size = 0;
};
Scratch g_scratch;
std::vector<std::pair<std::string, std::string>> g_impls;
int64_t g_live_tensors = 0;
int64_t g_live_bytes = 0;
size_t g_cached_prims = 0;
}  // namespace

namespace {
thread_local napi_env t_env = nullptr;
int64_t g_footprint = 0;
int64_t g_peak_live = 0;
}  // namespace

EnvScope::EnvScope(napi_env env) : prev_(t_env) { t_env = env; }
EnvScope::~EnvScope() { t_env = prev_; }

// The garbage collector is told about memory when the allocator takes it from the system or gives
// it back, not on every tensor alloc/free: a training step frees and re-allocates the same buffers
// through the pool, so the reported size stays flat and V8 does not run a mark-compact for every
// 64 MB of activations. Tensors that are never disposed still drain the pool, which makes the
// allocator take (and report) more memory, which makes V8 collect them.
void ReportExternal(int64_t delta) {
  g_footprint += delta;
  if (delta != 0 && t_env != nullptr) {
    int64_t result;
    napi_adjust_external_memory(t_env, delta, &result);
  }
}

// The engine's few A/B and budget switches are read here and nowhere else in native/ (the plan's come
// from TypeScript as data): RESIDUAL_NATIVE_POOL_MB, RESIDUAL_NATIVE_NO_REF, RESIDUAL_NATIVE_GROUPED.
std::string EnvKnob(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

namespace {
struct Pool {
  std::unordered_map<size_t, std::vector<void*>> free;
  size_t pooled = 0;
  size_t cap = 0;
  Pool() {
    std::string env = EnvKnob("RESIDUAL_NATIVE_POOL_MB");
    long mb = env.empty() ? 1024 : std::atol(env.c_str());
    cap = mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
  }
  void Release() {
    for (auto& kv : free)
      for (void* p : kv.second) std::free(p);
    free.clear();
    ReportExternal(-static_cast<int64_t>(pooled));
    pooled = 0;
  }
};
Pool& ThePool() {
  static Pool& pool = *new Pool();
  return pool;
}
size_t Rounded(size_t bytes) { return (bytes + 63) / 64 * 64; }
}  // namespace

void* PoolAlloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  size_t n = Rounded(bytes);
  Pool& pool = ThePool();
  auto it = pool.free.find(n);
  if (it != pool.free.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    pool.pooled -= n;
    return p;
  }
  size_t align = n >= (1u << 20) ? 4096 : 64;
  void* p = std::aligned_alloc(align, (n + align - 1) / align * align);
  if (!p) {
    pool.Release();  // give cached buffers back to the system and try once more
    p = std::aligned_alloc(align, (n + align - 1) / align * align);
    if (!p) throw std::bad_alloc();
  }
  ReportExternal(static_cast<int64_t>(n));
  return p;
}

void PoolFree(void* p, size_t bytes) {
  if (!p) return;
  size_t n = Rounded(bytes);
  Pool& pool = ThePool();
  // Keep up to the peak of live tensor memory (a training step re-allocates all of it), at least the cap.
  size_t limit = std::max(pool.cap, static_cast<size_t>(std::max<int64_t>(g_peak_live, 0)));
  if (pool.pooled + n > limit) {
    std::free(p);
    ReportExternal(-static_cast<int64_t>(n));
    return;
  }
  pool.free[n].push_back(p);
  pool.pooled += n;
}

size_t PooledBytes() { return ThePool().pooled; }
void PoolRelease() { ThePool().Release(); }

memory PooledMemory(const memory::desc& md, void** ptr) {
  *ptr = PoolAlloc(md.get_size());
  try {
    return memory(md, Eng(), *ptr);
  } catch (...) {
    PoolFree(*ptr, md.get_size());
    *ptr = nullptr;
    throw;
  }
}

void* ScratchPtr(size_t bytes) {
  if (bytes > g_scratch.size) {
    size_t n = ((bytes + 4095) / 4096) * 4096;
    void* p = std::aligned_alloc(4096, n);
    if (!p) throw std::bad_alloc();
    std::free(g_scratch.ptr);
    ReportExternal(static_cast<int64_t>(n) - static_cast<int64_t>(g_scratch.size));
    g_scratch.ptr = p;
    g_scratch.size = n;
  }
  return g_scratch.ptr;
}

dnnl::primitive_attr UserScratchAttr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

void Prim::Exec(std::unordered_map<int, memory> args) {
  size_t need = spad_md.get_size();
  if (need > 0) {
    void* p = ScratchPtr(need);
    if (!spad || spad_ptr != p) {
      spad = memory(spad_md, Eng(), p);
      spad_ptr = p;
    }
    args[DNNL_ARG_SCRATCHPAD] = spad;
  }
  prim.execute(Strm(), args);
}

void RecordImpl(const std::string& key, const char* impl) {
  // RESIDUAL_NATIVE_NO_REF=1 turns a reference-kernel choice into an error (for benchmarks and CI).
  static const bool strict = EnvKnob("RESIDUAL_NATIVE_NO_REF") == "1";
  if (strict && impl && std::strncmp(impl, "ref", 3) == 0)
    throw OpError("oneDNN chose the reference kernel " + std::string(impl) + " for " + key +
                  " (RESIDUAL_NATIVE_NO_REF is set)");
  ++g_cached_prims;
  if (g_impls.size() > 4096) g_impls.clear();
  g_impls.emplace_back(key, impl ? impl : "");
}
size_t& CachedPrimitiveCount() { return g_cached_prims; }
int64_t& LiveTensors() { return g_live_tensors; }
int64_t& LiveBytes() { return g_live_bytes; }

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

std::recursive_mutex& GlobalLock() {
  static std::recursive_mutex m;
  return m;
}

namespace {
std::mutex deferred_mu;
std::vector<std::pair<napi_env, std::function<void()>>> deferred;  // guarded by deferred_mu
std::atomic<size_t> deferred_count{0};                             // lets RunDeferred skip the mutex
}  // namespace

void RunWhenEngineFree(napi_env env, std::function<void()> fn) {
  std::unique_lock<std::recursive_mutex> lock(GlobalLock(), std::try_to_lock);
  if (lock.owns_lock()) {
    RunDeferred(env);
    EnvScope scope(env);
    fn();
    return;
  }
  std::lock_guard<std::mutex> g(deferred_mu);
  deferred.emplace_back(env, std::move(fn));
  deferred_count.store(deferred.size());
}

void RunDeferred(napi_env env) {
  if (deferred_count.load(std::memory_order_relaxed) == 0) return;
  std::vector<std::function<void()>> mine;
  {
    std::lock_guard<std::mutex> g(deferred_mu);
    auto keep = std::stable_partition(deferred.begin(), deferred.end(), [&](const auto& d) { return d.first != env; });
    for (auto it = keep; it != deferred.end(); ++it) mine.push_back(std::move(it->second));
    deferred.erase(keep, deferred.end());
    deferred_count.store(deferred.size());
  }
  EnvScope scope(env);
  for (auto& fn : mine) fn();
}

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

void Tensor::AdjustMem(int64_t delta) {
  g_live_bytes += delta;
  g_peak_live = std::max(g_peak_live, g_live_bytes);
}

void Tensor::Allocate(Napi::Env env, const dims& shp, Layout lay, const memory::desc& d) {
  env_ = env;
  shape = shp;
  layout = lay;
  md = d;
  size_t bytes = md.get_size();
  mem = PooledMemory(md, &buf_);
  alive_ = true;
  ++g_live_tensors;
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
  --g_live_tensors;
  AdjustMem(-static_cast<int64_t>(bytes));
}

void Reorder(const memory& src, const memory& dst) {
  dnnl::reorder(src, dst).execute(Strm(), const_cast<memory&>(src), const_cast<memory&>(dst));
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

// ---------------------------------------------------------------- arguments and errors

void Require(bool cond, const std::string& msg) {
  if (!cond) throw OpError(msg);
}

Tensor* ArgTensorOrNull(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return ArgTensor(info, i);
}

// The tensor behind `v`, or null when `v` is not a tensor made by this environment (including an
// object that merely has the tensor prototype).
bool IsTensorObject(Napi::Env env, Napi::Value v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(Tensor::Ctor(env));
}

Tensor* TensorOf(Napi::Env env, Napi::Value v) {
  if (!IsTensorObject(env, v)) return nullptr;
  return Wrapped(env, v);
}

Tensor* ArgTensor(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length(), "missing tensor argument " + std::to_string(i));
  Tensor* t = TensorOf(info.Env(), info[i]);
  if (t == nullptr) {
    // A disposed tensor has lost its native side: it is still an instance of the class.
    Require(!IsTensorObject(info.Env(), info[i]), "argument " + std::to_string(i) + " is a disposed tensor");
    throw OpError("argument " + std::to_string(i) + " is not a native tensor");
  }
  Require(t->Alive(), "argument " + std::to_string(i) + " is a disposed tensor");
  return t;
}

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsNumber(), "argument " + std::to_string(i) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  Require(std::isfinite(d) && d == std::floor(d), "argument " + std::to_string(i) + " must be an integer");
  return static_cast<int64_t>(d);
}

double ArgNum(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsNumber(), "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsBoolean(), "argument " + std::to_string(i) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

dims ArgSizes(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsArray(), "argument " + std::to_string(i) + " must be an array of sizes");
  Napi::Array a = info[i].As<Napi::Array>();
  dims d(a.Length());
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    Require(v.IsNumber(), "sizes must be numbers");
    double x = v.As<Napi::Number>().DoubleValue();
    Require(std::isfinite(x) && x >= 0 && x == std::floor(x) && x < 9.0e15, "sizes must be non-negative integers");
    d[k] = static_cast<int64_t>(x);
  }
  return d;
}

dims ArgDims(const Napi::CallbackInfo& info, size_t i) {
  dims d = ArgSizes(info, i);
  Require(d.size() <= 8, "at most 8 dimensions are supported");
  double total = 1;
  for (auto v : d) total *= static_cast<double>(v);
  Require(total <= 4.0e12, "shape has too many elements");
  return d;
}

namespace {
// Each exported op carries its name and function in the callback data.
struct Slot {
  const char* name;
  OpFn fn;
};
Napi::Value Trampoline(const Napi::CallbackInfo& info) {
  const Slot* slot = static_cast<const Slot*>(info.Data());
  std::lock_guard<std::recursive_mutex> lock(GlobalLock());
  EnvScope scope(info.Env());
  RunDeferred(info.Env());
  try {
    return slot->fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": oneDNN error: " + e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": " + e.what());
  } catch (...) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": unknown failure");
  }
}
}  // namespace

void Export(Napi::Env env, Napi::Object exports, const char* name, OpFn fn) {
  Slot* slot = new Slot{name, fn};  // lives as long as the module
  exports.Set(name, Napi::Function::New(env, Trampoline, name, slot));
}

// ---------------------------------------------------------------- memory ops

namespace {

Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 2 && info[0].IsTypedArray(), "data must be a Float32Array");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  Require(ta.TypedArrayType() == napi_float32_array, "data must be a Float32Array");
  Napi::Float32Array data = ta.As<Napi::Float32Array>();
  dims shape = ArgDims(info, 1);
  int64_t n = Product(shape);
  Require(static_cast<int64_t>(data.ElementLength()) == n,
          "data has " + std::to_string(data.ElementLength()) + " elements but the shape needs " + std::to_string(n));
  NewT r = NewPlain(info.Env(), shape);
  if (n > 0) std::memcpy(r.t->Data(), data.Data(), static_cast<size_t>(n) * sizeof(float));
  return r.obj;
}

// Zeros are zeros in every layout, so a 4-D one starts in the activation layout (NHWC): gradient
// accumulators then need no reorder. A weight made by zeros relayouts itself to plain on first use.
Napi::Value Zeros(const Napi::CallbackInfo& info) {
  dims shape = ArgDims(info, 0);
  NewT r = NewCanon(info.Env(), shape);
  if (r.t->Numel() > 0) std::memset(r.t->Data(), 0, r.t->md.get_size());
  return r.obj;
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  Tensor* t = ArgTensor(info, 0);
  Require(t->layout != Layout::Opaque, "an argmax tensor is an opaque oneDNN workspace and cannot be read");
  int64_t n = t->Numel();
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(n));
  if (n == 0) return out;
  if (t->layout == Layout::Plain) {
    std::memcpy(out.Data(), t->Data(), static_cast<size_t>(n) * sizeof(float));
  } else {
    memory dst(PlainMd(t->shape), Eng(), out.Data());
    Reorder(t->mem, dst);
    Strm().wait();
  }
  return out;
}

Napi::Value Reshape(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  dims shape = ArgDims(info, 1);
  Require(Product(shape) == x->Numel(), "reshape must keep the element count");
  Require(x->layout != Layout::Opaque, "cannot reshape an opaque tensor");
  if (x->layout == Layout::NHWC && shape == x->shape) {
    NewT r = NewTensor(info.Env(), shape, Layout::NHWC, x->md);
    std::memcpy(r.t->Data(), x->Data(), x->md.get_size());
    return r.obj;
  }
  NewT r = NewPlain(info.Env(), shape);
  if (x->Numel() == 0) return r.obj;
  // NHWC with H*W == 1 or C == 1 has the same bytes as NCHW (e.g. the pooled features before the head).
  bool same_bytes = x->layout == Layout::Plain ||
                    (x->layout == Layout::NHWC && (x->Dim(2) * x->Dim(3) == 1 || x->Dim(1) == 1));
  if (same_bytes) {
    std::memcpy(r.t->Data(), x->Data(), static_cast<size_t>(x->Numel()) * sizeof(float));
  } else {
    memory dst(PlainMd(x->shape), Eng(), r.t->Data());
    Reorder(x->mem, dst);
  }
  return r.obj;
}

Napi::Value DisposeFn(const Napi::CallbackInfo& info) {
  // Disposing twice is harmless; disposing something that is not a tensor is an error.
  Require(info.Length() >= 1 && IsTensorObject(info.Env(), info[0]), "argument 0 is not a native tensor");
  Tensor::DisposeObject(info.Env(), info[0]);
  return info.Env().Undefined();
}

Napi::Value ByteSize(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && IsTensorObject(info.Env(), info[0]), "argument 0 is not a native tensor");
  Tensor* t = TensorOf(info.Env(), info[0]);
  return Napi::Number::New(info.Env(), t ? static_cast<double>(t->Bytes()) : 0.0);
}

}  // namespace

const char* IsaName(dnnl::cpu_isa isa) {
  using I = dnnl::cpu_isa;
  switch (isa) {
    case I::sse41: return "sse41";
    case I::avx: return "avx";
    case I::avx2: return "avx2";
    case I::avx2_vnni: return "avx2_vnni";
    case I::avx512_mic: return "avx512_mic";
    case I::avx512_mic_4ops: return "avx512_mic_4ops";
    case I::avx512_core: return "avx512_core";
    case I::avx512_core_vnni: return "avx512_core_vnni";
    case I::avx512_core_bf16: return "avx512_core_bf16";
    case I::avx512_core_amx: return "avx512_core_amx";
    case I::all: return "all";
    default: return "unknown";
  }
}

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const dnnl_version_t* v = dnnl_version();
  Napi::Object o = Napi::Object::New(env);
  o.Set("onednnVersion", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  o.Set("isa", IsaName(dnnl::get_effective_cpu_isa()));
  o.Set("threads", omp_get_max_threads());
  return o;
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveTensors", static_cast<double>(g_live_tensors));
  o.Set("liveBytes", static_cast<double>(g_live_bytes));
  o.Set("primitivesCreated", static_cast<double>(g_cached_prims));
  o.Set("scratchpadBytes", static_cast<double>(g_scratch.size));
  o.Set("pooledBytes", static_cast<double>(PooledBytes()));
  o.Set("footprintBytes", static_cast<double>(g_footprint));
  return o;
}

Napi::Value Impls(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env, g_impls.size());
  for (size_t i = 0; i < g_impls.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("key", g_impls[i].first);
    o.Set("impl", g_impls[i].second);
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

Napi::Value ReleasePool(const Napi::CallbackInfo& info) {
  PoolRelease();
  return info.Env().Undefined();
}

Napi::Value ClearImpls(const Napi::CallbackInfo& info) {
  g_impls.clear();
  return info.Env().Undefined();
}

}  // namespace

void RegisterTensorOps(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTensor", Tensor::Init(env));
  Export(env, exports, "fromArray", FromArray);
  Export(env, exports, "zeros", Zeros);
  Export(env, exports, "read", Read);
  Export(env, exports, "reshape", Reshape);
  Export(env, exports, "dispose", DisposeFn);
  Export(env, exports, "byteSize", ByteSize);
  Export(env, exports, "info", Info);
  Export(env, exports, "stats", Stats);
  Export(env, exports, "implementations", Impls);
  Export(env, exports, "clearImplementations", ClearImpls);
  Export(env, exports, "releasePool", ReleasePool);
}

}  // namespace residual
