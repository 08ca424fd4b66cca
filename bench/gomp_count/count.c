// Counts OpenMP parallel regions (GOMP_parallel) and explicit barriers (GOMP_barrier) of a process,
// for issue #17: how many times per training step the engine's threads meet, ours against PyTorch's
// (both use libgomp). Build and use (the counts go to GOMP_COUNT_FILE at exit, one JSON line):
//   gcc -O2 -shared -fPIC bench/gomp_count/count.c -o /tmp/libgompcount.so -ldl
//   GOMP_COUNT_FILE=/tmp/c.jsonl LD_PRELOAD=/tmp/libgompcount.so residual bench ... --runs 5
// Run twice with different --runs and divide the difference by the extra steps.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
static void* gomp_sym(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (!p) { void* h = dlopen("libgomp.so.1", RTLD_NOW | RTLD_GLOBAL); if (h) p = dlsym(h, name); }
  return p;
}
static atomic_long n_parallel, n_barrier;
typedef void (*par_fn)(void (*)(void *), void *, unsigned, unsigned);
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags) {
  static par_fn real;
  if (!real) real = (par_fn)gomp_sym("GOMP_parallel");
  atomic_fetch_add(&n_parallel, 1);
  real(fn, data, num_threads, flags);
}
typedef void (*bar_fn)(void);
void GOMP_barrier(void) {
  static bar_fn real;
  if (!real) real = (bar_fn)gomp_sym("GOMP_barrier");
  atomic_fetch_add(&n_barrier, 1);
  real();
}
__attribute__((destructor)) static void report(void) {
  const char* f = getenv("GOMP_COUNT_FILE");
  FILE* o = f ? fopen(f, "a") : stderr;
  fprintf(o, "{\"gomp_parallel\":%ld,\"gomp_barrier\":%ld}\n", (long)n_parallel, (long)n_barrier);
  if (f) fclose(o);
}
