// The engine, stream, scratchpad, implementation records, the global lock and deferred frees.
#include "engine_env.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace residual {

namespace {
EngineConfig g_config;
}  // namespace

const EngineConfig& Config() { return g_config; }
void Configure(const EngineConfig& config) { g_config = config; }

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
size_t g_cached_prims = 0;
thread_local napi_env t_env = nullptr;
int64_t g_footprint = 0;
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
int64_t FootprintBytes() { return g_footprint; }

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
size_t ScratchBytes() { return g_scratch.size; }

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

void Reorder(const memory& src, const memory& dst) {
  dnnl::reorder(src, dst).execute(Strm(), const_cast<memory&>(src), const_cast<memory&>(dst));
}

void Require(bool cond, const std::string& msg) {
  if (!cond) throw OpError(msg);
}

void RecordImpl(const std::string& key, const char* impl) {
  if (g_config.refuse_ref && impl && std::strncmp(impl, "ref", 3) == 0)
    throw OpError("oneDNN chose the reference kernel " + std::string(impl) + " for " + key +
                  " (RESIDUAL_NATIVE_NO_REF is set)");
  ++g_cached_prims;
  if (g_impls.size() > 4096) g_impls.clear();
  g_impls.emplace_back(key, impl ? impl : "");
}
const std::vector<std::pair<std::string, std::string>>& RecordedImpls() { return g_impls; }
void ClearRecordedImpls() { g_impls.clear(); }
size_t& CachedPrimitiveCount() { return g_cached_prims; }

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

// ---------------------------------------------------------------- lock and deferred frees

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

}  // namespace residual
