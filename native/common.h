// Shared pieces of the native engine: the oneDNN engine and stream, the shared scratchpad, the
// tensor object, argument parsing and error translation at the N-API boundary.
#pragma once

#include <napi.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace residual {

using dnnl::memory;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

// ---------------------------------------------------------------- engine, stream, scratchpad

dnnl::engine& Eng();
dnnl::stream& Strm();

// One scratchpad shared by every primitive (all execution is sequential on the JS thread).
// Grows on demand; primitives are created with scratchpad_mode::user.
void* ScratchPtr(size_t bytes);
dnnl::primitive_attr UserScratchAttr();

// A primitive plus the memory object that points its scratchpad at the shared buffer.
struct Prim {
  dnnl::primitive prim;
  memory::desc spad_md;
  memory spad;          // rebound when the shared buffer moves
  void* spad_ptr = nullptr;
  void Exec(std::unordered_map<int, memory> args);
  bool Empty() const { return !prim; }
};
template <typename PD, typename P>
Prim MakePrim(const PD& pd) {
  Prim p;
  p.prim = P(pd);
  p.spad_md = pd.scratchpad_desc();
  return p;
}

// A caching allocator for tensor buffers: a training step frees and re-allocates the same sizes
// every iteration, so freed buffers are kept (up to a cap) and handed out again. This avoids the
// page faults and zeroing of fresh mmap'd memory on every op. The pool keeps at most
// max(RESIDUAL_NATIVE_POOL_MB (default 1024), peak live tensor bytes); PoolRelease empties it.
void* PoolAlloc(size_t bytes);
// Tells the calling environment's garbage collector about memory taken from / given back to the system.
void ReportExternal(int64_t delta);
// Which JS environment the current thread is working for (set at the N-API boundary).
class EnvScope {
 public:
  explicit EnvScope(napi_env env);
  ~EnvScope();
 private:
  napi_env prev_;
};
void PoolFree(void* p, size_t bytes);
size_t PooledBytes();
void PoolRelease();
// A memory object over a pooled buffer; `*ptr` receives the buffer to give back with PoolFree.
memory PooledMemory(const memory::desc& md, void** ptr);

// The name of a CPU ISA as `info().isa` reports it (e.g. "avx512_core_bf16").
const char* IsaName(dnnl::cpu_isa isa);

// Records which implementation oneDNN chose for each cached primitive (tests assert no "ref:").
// An environment switch, "" when unset: the one place native/ reads the environment (tensor.cc).
std::string EnvKnob(const char* name);
void RecordImpl(const std::string& key, const char* impl);

// An error raised by our own validation; the boundary prefixes it with the op name.
struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A small string key builder for the primitive caches.
struct Key {
  std::string s;
  explicit Key(const char* op) : s(op) {}
  Key& operator<<(int64_t v) { s += ':'; s += std::to_string(v); return *this; }
  Key& operator<<(const char* v) { s += ':'; s += v; return *this; }
  Key& operator<<(const dims& d) { s += ":["; for (auto v : d) { s += std::to_string(v); s += ','; } s += ']'; return *this; }
};

// A bounded cache of primitive bundles: cleared when it grows past a limit (shapes in a model are few).
// A reference returned by Get stays valid until the next Get on the same cache inserts: callers
// never hold one across a second insertion into the same cache.
// Keyed by the thread count too: oneDNN runs a primitive with the thread count it was created with,
// so after setNumThreads a shape gets primitives of its own for the new count.
template <typename V>
struct Cache {
  std::unordered_map<std::string, std::shared_ptr<V>> map;
  template <typename F>
  V& Get(const Key& k, F make) {
    const std::string key = k.s + "@" + std::to_string(omp_get_max_threads());
    auto it = map.find(key);
    if (it != map.end()) return *it->second;
    if (map.size() >= 512) map.clear();
    auto v = std::make_shared<V>(make());
    auto& ref = *v;
    map.emplace(key, std::move(v));
    return ref;
  }
  size_t Size() const { return map.size(); }
};
size_t& CachedPrimitiveCount();

// ---------------------------------------------------------------- tensor

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

// Live tensor accounting (for tests and leak checks).
int64_t& LiveTensors();
int64_t& LiveBytes();

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
void Reorder(const memory& src, const memory& dst);

// ---------------------------------------------------------------- arguments and errors

Tensor* TensorOf(Napi::Env env, Napi::Value v);
Tensor* ArgTensor(const Napi::CallbackInfo& info, size_t i);
Tensor* ArgTensorOrNull(const Napi::CallbackInfo& info, size_t i);
int64_t ArgInt(const Napi::CallbackInfo& info, size_t i);
double ArgNum(const Napi::CallbackInfo& info, size_t i);
bool ArgBool(const Napi::CallbackInfo& info, size_t i);
dims ArgDims(const Napi::CallbackInfo& info, size_t i);
// A list of sizes that is not a shape (e.g. the channel counts of a split): any length.
dims ArgSizes(const Napi::CallbackInfo& info, size_t i);
void Require(bool cond, const std::string& msg);

using OpFn = Napi::Value (*)(const Napi::CallbackInfo&);
// Wraps an op so that oneDNN and C++ exceptions become JS Errors naming the op.
void Export(Napi::Env env, Napi::Object exports, const char* name, OpFn fn);

// Parallel loop helper: runs OpenMP only when the work is large enough to pay for the region.
constexpr int64_t kParallelMin = 1 << 17;

// All native state (caches, pool, scratchpad, stream) is process-wide while worker threads each have
// their own JS environment, so every op and finalizer runs under this lock. Recursive: a GC
// finalizer may run inside an op when the op allocates JS objects.
std::recursive_mutex& GlobalLock();

// For GC finalizers: runs `fn` under GlobalLock now if the lock is free, else queues it for the next
// native call from the same environment (RunDeferred). A finalizer runs on the JS thread, and
// waiting for the lock there would stall the event loop for a whole asynchronous inference run.
void RunWhenEngineFree(napi_env env, std::function<void()> fn);
// Runs the work queued for `env`; the caller holds GlobalLock on env's JS thread.
void RunDeferred(napi_env env);

// Registration of each op family.
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
