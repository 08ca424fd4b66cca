// Peak multiply-add throughput of one core: f32 FMA (vfmadd231ps zmm) against bf16 dot products
// (vdpbf16ps zmm: 32 bf16 products summed pairwise into 16 f32 lanes) and int8 VNNI dot products
// (vpdpbusd zmm: 64 u8 x s8 products summed by fours into 16 s32 lanes). 12 independent
// accumulators hide the latency. Prints GFLOP/s (a multiply-add = 2 FLOP; for int8, 2 integer ops)
// per second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so time spent descheduled on a
// shared machine does not count. Build:
//   g++ -O2 -mavx512f -mavx512bf16 -mavx512vnni bench/peak/peak.cc -o /tmp/peak && /tmp/peak
#include <immintrin.h>
#include <algorithm>
#include <cstdio>
#include <ctime>

static double Now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <class F>
double Time(F f) {
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    double t0 = Now();
    f();
    best = std::min(best, Now() - t0);
  }
  return best;
}

int main() {
  const long iters = 50'000'000;
  __m512 acc[12];
  float sink = 0;
  double t = Time([&] {
    for (auto& a : acc) a = _mm512_set1_ps(0.f);
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
      for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(x, y, acc[k]);
      asm volatile("" : "+v"(x));
    }
    for (auto& a : acc) sink += _mm512_reduce_add_ps(a);
  });
  double f32 = iters * 12.0 * 16 * 2 / t / 1e9;
  t = Time([&] {
    for (auto& a : acc) a = _mm512_set1_ps(0.f);
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3f80);
    for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
      for (int k = 0; k < 12; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], x, y);
      asm volatile("" : "+v"(x));
    }
    for (auto& a : acc) sink += _mm512_reduce_add_ps(a);
  });
  double bf16 = iters * 12.0 * 32 * 2 / t / 1e9;
  __m512i iacc[12];
  long long isink = 0;
  t = Time([&] {
    for (auto& a : iacc) a = _mm512_setzero_si512();
    __m512i x = _mm512_set1_epi8(1), y = _mm512_set1_epi8(1);
    for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
      for (int k = 0; k < 12; ++k) iacc[k] = _mm512_dpbusd_epi32(iacc[k], x, y);
      asm volatile("" : "+v"(x));
    }
    for (auto& a : iacc) isink += _mm512_reduce_add_epi32(a);
  });
  double int8 = iters * 12.0 * 64 * 2 / t / 1e9;
  std::printf("{\"f32_fma_gflops\": %.1f, \"bf16_dpbf16ps_gflops\": %.1f, \"int8_vpdpbusd_gops\": %.1f, "
              "\"bf16_over_f32\": %.2f, \"int8_over_f32\": %.2f, \"sink\": %g}\n",
              f32, bf16, int8, bf16 / f32, int8 / f32, sink + isink);
}
