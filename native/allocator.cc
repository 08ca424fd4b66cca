// The caching allocator (see allocator.h).
#include "allocator.h"

#include <algorithm>
#include <cstdlib>

namespace residual {

namespace {
int64_t g_live_tensors = 0;
int64_t g_live_bytes = 0;
int64_t g_peak_live = 0;

struct Pool {
  std::unordered_map<size_t, std::vector<void*>> free;
  size_t pooled = 0;
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

void CountLiveBytes(int64_t delta) {
  g_live_bytes += delta;
  g_peak_live = std::max(g_peak_live, g_live_bytes);
}
int64_t& LiveTensors() { return g_live_tensors; }
int64_t LiveBytes() { return g_live_bytes; }

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
  size_t limit = std::max(Config().pool_cap_bytes, static_cast<size_t>(std::max<int64_t>(g_peak_live, 0)));
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

}  // namespace residual
