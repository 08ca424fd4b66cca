// The narrow-group 3x3 kernel (see grouped_conv.h).
//
// How it avoids both wasted multiplies and per-tap shuffles: a 16-lane vector x holds 16 input
// channels of one pixel, i.e. 16/W whole groups of W channels. For each rotation r = 0..W-1 the
// kernel accumulates acc_r += x * w_r, where lane j of w_r is the weight from input channel j % W to
// output channel (j + r) % W of the same group. After all nine taps, output channel o of a group is
// the sum over r of acc_r at lane (o - r) % W, so each acc_r is rotated by r inside its group once
// per output pixel and added: W fused multiply-adds per tap and pixel (the minimum: 16 x W MACs) and
// W - 1 permutes per output pixel.
#include "grouped_conv.h"

#include <immintrin.h>
#include <omp.h>

namespace residual {
namespace {

// Storage types: loads widen to f32, stores round to nearest even (bf16).
struct F32 {
  using T = float;
};
struct Bf16 {
  using T = uint16_t;
};

// Everything one output row needs; the same for all rows of a (sample, channel block).
template <class E>
struct RowArgs {
  const typename E::T* in;  // the sample's channel block
  BlockStrides s;
  int64_t ih, iw, stride;
  const float* w;       // the block's packed weights: [9 taps][W rotations][16]
  const float* bias;    // the block's 16 biases
  const int32_t* rot;   // [W][16] permute indices
  typename E::T* out;   // the output row
  int64_t out_pixel;
  bool relu, sum;
};

}  // namespace

// Only the kernel below is compiled for AVX-512; it uses intrinsics and plain loops (nothing from the
// standard library, whose inline functions must stay baseline code). Callers check Covers() first.
#pragma GCC push_options
#pragma GCC target("avx512f")
// GCC 12's own intrinsics (_mm512_undefined_ps, a self-initialized variable) trip these.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace {

inline __m512 Load(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 Load(const uint16_t* p) {
  __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
}
inline void Store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void Store(uint16_t* p, __m512 v) {
  __m512i b = _mm512_castps_si512(v);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  b = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
}

// P output pixels starting at `ow0` of the row whose first input row is `ih0` (may be -1).
// `Edge`: some of their input rows or columns fall in the padding (checked; else no branch at all,
// which keeps the accumulators in registers).
template <class E, int W, int P, bool Edge>
inline void Pixels(const RowArgs<E>& a, int64_t ih0, int64_t ow0) {
  __m512 acc[P][W];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int r = 0; r < W; ++r) acc[p][r] = _mm512_setzero_ps();
  const int64_t iw0 = ow0 * a.stride - 1;
#pragma GCC unroll 3
  for (int kh = 0; kh < 3; ++kh) {
    const int64_t ih = ih0 + kh;
    if (Edge && (ih < 0 || ih >= a.ih)) continue;
    const typename E::T* row = a.in + ih * a.s.row;
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw) {
      const float* wt = a.w + (kh * 3 + kw) * W * 16;
      __m512 x[P];
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const int64_t iw = iw0 + p * a.stride + kw;
        x[p] = Edge && (iw < 0 || iw >= a.iw) ? _mm512_setzero_ps() : Load(row + iw * a.s.pixel);
      }
      // One weight vector at a time, in a register for all P pixels: GCC would otherwise fold the
      // load into every FMA, and one 512-bit load per FMA is more than the core sustains.
#pragma GCC unroll 8
      for (int r = 0; r < W; ++r) {
        __m512 wr = _mm512_loadu_ps(wt + r * 16);
        asm("" : "+v"(wr));
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) acc[p][r] = _mm512_fmadd_ps(x[p], wr, acc[p][r]);
      }
    }
  }
  const __m512 b = _mm512_loadu_ps(a.bias);
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    __m512 v = _mm512_add_ps(b, acc[p][0]);
#pragma GCC unroll 8
    for (int r = 1; r < W; ++r) v = _mm512_add_ps(v, _mm512_permutexvar_ps(_mm512_loadu_si512(a.rot + r * 16), acc[p][r]));
    typename E::T* o = a.out + (ow0 + p) * a.out_pixel;
    if (a.sum) v = _mm512_add_ps(v, Load(o));
    if (a.relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    Store(o, v);
  }
}

// The last `count` (< P) pixels of a row, or a group of P that touches the padding.
template <class E, int W, int K>
inline void EdgePixels(const RowArgs<E>& a, int64_t ih0, int64_t ow0, int64_t count) {
  if (count == K) return Pixels<E, W, K, true>(a, ih0, ow0);
  if constexpr (K > 1) EdgePixels<E, W, K - 1>(a, ih0, ow0, count);
}

template <class E, int W, int P>
void Rows(const void* src, const BlockStrides& s, int64_t ih, int64_t iw, void* dst, const BlockStrides& d, int64_t oh, int64_t ow,
          int64_t n, int64_t blocks, int64_t stride, const float* packed, const float* bias, const int32_t* rot, bool relu, bool sum) {
  using T = typename E::T;
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t k = 0; k < n; ++k)
    for (int64_t cb = 0; cb < blocks; ++cb)
      for (int64_t y = 0; y < oh; ++y) {
        RowArgs<E> a{static_cast<const T*>(src) + k * s.batch + cb * s.block,
                     s,
                     ih,
                     iw,
                     stride,
                     packed + cb * 9 * W * 16,
                     bias + cb * 16,
                     rot,
                     static_cast<T*>(dst) + k * d.batch + cb * d.block + y * d.row,
                     d.pixel,
                     relu,
                     sum};
        const int64_t ih0 = y * stride - 1;
        const bool edge_row = ih0 < 0 || ih0 + 2 >= ih;
        int64_t x = 0;
        while (x < ow) {
          const int64_t count = ow - x < P ? ow - x : P;
          const bool edge = edge_row || x * stride - 1 < 0 || (x + count - 1) * stride + 1 >= iw;
          if (count == P && !edge)
            Pixels<E, W, P, false>(a, ih0, x);
          else
            EdgePixels<E, W, P>(a, ih0, x, count);
          x += count;
        }
      }
}

}  // namespace
#pragma GCC diagnostic pop
#pragma GCC pop_options

bool GroupedConv3x3::Covers(int64_t channels_in, int64_t channels_out, int64_t groups, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx512 || groups <= 1 || channels_in != channels_out || channels_in % 16 != 0) return false;
  const int64_t width = channels_in / groups;
  return (width == 4 || width == 8) && kh == 3 && kw == 3 && ph == 1 && pw == 1 && dh == 1 && dw == 1 && sh == sw && (sh == 1 || sh == 2);
}

GroupedConv3x3::GroupedConv3x3(const float* weight, const float* bias, int64_t channels, int64_t width, int64_t stride, bool relu, bool sum)
    : channels_(channels), width_(width), stride_(stride), relu_(relu), sum_(sum), bias_(bias, bias + channels) {
  const int64_t w = width, blocks = channels / 16;
  packed_.resize(static_cast<size_t>(blocks * 9 * w * 16));
  for (int64_t cb = 0; cb < blocks; ++cb)
    for (int64_t t = 0; t < 9; ++t)
      for (int64_t r = 0; r < w; ++r)
        for (int64_t j = 0; j < 16; ++j) {
          const int64_t group_base = j / w * w, in = j % w;
          const int64_t out = cb * 16 + group_base + (in + r) % w;
          packed_[static_cast<size_t>(((cb * 9 + t) * w + r) * 16 + j)] = weight[(out * w + in) * 9 + t];
        }
  rot_.resize(static_cast<size_t>(w * 16));
  for (int64_t r = 0; r < w; ++r)
    for (int64_t k = 0; k < 16; ++k) rot_[static_cast<size_t>(r * 16 + k)] = static_cast<int32_t>(k / w * w + ((k - r) % w + w) % w);
}

void GroupedConv3x3::Run(const void* src, const BlockStrides& s, int64_t ih, int64_t iw, void* dst, const BlockStrides& d, int64_t oh,
                         int64_t ow, int64_t n, bool bf16) const {
  const int64_t blocks = channels_ / 16;
  const float *w = packed_.data(), *b = bias_.data();
  const int32_t* rot = rot_.data();
  // Register blocking: W accumulators per pixel, 24 of the 32 vector registers for them.
  if (width_ == 4 && !bf16) Rows<F32, 4, 6>(src, s, ih, iw, dst, d, oh, ow, n, blocks, stride_, w, b, rot, relu_, sum_);
  if (width_ == 4 && bf16) Rows<Bf16, 4, 6>(src, s, ih, iw, dst, d, oh, ow, n, blocks, stride_, w, b, rot, relu_, sum_);
  if (width_ == 8 && !bf16) Rows<F32, 8, 3>(src, s, ih, iw, dst, d, oh, ow, n, blocks, stride_, w, b, rot, relu_, sum_);
  if (width_ == 8 && bf16) Rows<Bf16, 8, 3>(src, s, ih, iw, dst, d, oh, ow, n, blocks, stride_, w, b, rot, relu_, sum_);
}

}  // namespace residual
