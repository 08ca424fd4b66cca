// The engine: oneDNN's engine and stream, the shared scratchpad, primitive caches, the global lock
// and the frees deferred while it is held, and the engine's configuration (set once from
// TypeScript at initBackend). No Node-API here: what ties the engine to a JS environment is in
// engine_env.h.
#pragma once

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace residual {

using dnnl::memory;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

// The decisions TypeScript makes once at initBackend (src/backend/config.ts) and hands down as data:
// native/ reads no environment variables.
struct EngineConfig {
  size_t pool_cap_bytes = size_t(1024) << 20;  // the allocator keeps at least this much for reuse
  bool refuse_ref = false;                     // a reference-kernel choice is an error (benchmarks, CI)
  bool grouped_onednn = false;                 // narrow groups in training use oneDNN, not our kernel
};
const EngineConfig& Config();
void Configure(const EngineConfig& config);

// ---------------------------------------------------------------- engine, stream, scratchpad

dnnl::engine& Eng();
dnnl::stream& Strm();

// One scratchpad shared by every primitive (all execution is sequential under GlobalLock).
// Grows on demand; primitives are created with scratchpad_mode::user.
void* ScratchPtr(size_t bytes);
size_t ScratchBytes();
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

// Copies `src` into `dst` (a oneDNN reorder: any layout or data type to any other).
void Reorder(const memory& src, const memory& dst);

// Tells the calling environment's garbage collector about memory taken from / given back to the system.
void ReportExternal(int64_t delta);
int64_t FootprintBytes();

// The name of a CPU ISA as `info().isa` reports it (e.g. "avx512_core_bf16").
const char* IsaName(dnnl::cpu_isa isa);

// Records which implementation oneDNN chose for each cached primitive (tests assert no "ref:").
void RecordImpl(const std::string& key, const char* impl);
const std::vector<std::pair<std::string, std::string>>& RecordedImpls();
void ClearRecordedImpls();

// An error raised by our own validation; the boundary prefixes it with the op name.
struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void Require(bool cond, const std::string& msg);

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

// Parallel loop helper: runs OpenMP only when the work is large enough to pay for the region.
constexpr int64_t kParallelMin = 1 << 17;

// ---------------------------------------------------------------- lock and deferred frees

// All native state (caches, pool, scratchpad, stream) is process-wide while worker threads each have
// their own JS environment, so every op and finalizer runs under this lock. Recursive: a GC
// finalizer may run inside an op when the op allocates JS objects.
std::recursive_mutex& GlobalLock();

}  // namespace residual
