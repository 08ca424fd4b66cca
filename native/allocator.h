// The caching allocator for tensor buffers: a training step frees and re-allocates the same sizes
// every iteration, so freed buffers are kept (up to a cap) and handed out again. This avoids the
// page faults and zeroing of fresh mmap'd memory on every op. The pool keeps at most
// max(Config().pool_cap_bytes, peak live tensor bytes); PoolRelease empties it.
#pragma once

#include "engine.h"

namespace residual {

void* PoolAlloc(size_t bytes);
void PoolFree(void* p, size_t bytes);
size_t PooledBytes();
void PoolRelease();
// A memory object over a pooled buffer; `*ptr` receives the buffer to give back with PoolFree.
memory PooledMemory(const memory::desc& md, void** ptr);

// Live tensor accounting (for tests and leak checks); the peak sets how much the pool may keep.
void CountLiveBytes(int64_t delta);
int64_t& LiveTensors();
int64_t LiveBytes();

}  // namespace residual
