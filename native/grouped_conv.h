// A 3x3 grouped convolution for narrow groups (4 or 8 channels per group, ResNeXt's first two
// stages), where oneDNN 2.6 has no nChw16c kernel: it picks nChw4c/nChw8c, reaches 40-90 GFLOP/s
// and needs a reorder on each side. This one runs on the plan's own layout (nChw16c or NHWC: either
// way 16 consecutive channels of a pixel are contiguous), f32 or bf16 storage, f32 arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace residual {

// Element strides of an activation tensor, seen as [batch][channel block of 16][row][pixel][16].
struct BlockStrides {
  int64_t batch = 0, block = 0, row = 0, pixel = 0;
  static BlockStrides Nchw16c(int64_t c, int64_t h, int64_t w) { return {c * h * w, h * w * 16, w * 16, 16}; }
  static BlockStrides Nhwc(int64_t c, int64_t h, int64_t w) { return {h * w * c, 16, w * c, c}; }
};

class GroupedConv3x3 {
 public:
  // Whether the kernel covers a conv: 3x3, padding 1, stride 1 or 2, no dilation, `width` (channels
  // per group) 4 or 8 on both sides, channels a multiple of 16, and a CPU with AVX-512.
  static bool Covers(int64_t channels_in, int64_t channels_out, int64_t groups, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                     int64_t ph, int64_t pw, int64_t dh, int64_t dw);

  // `weight` is [channels][width][3][3] (PyTorch's grouped OIHW), BN already folded in; `bias` is
  // [channels]. Both are repacked here, so the caller may free them.
  GroupedConv3x3(const float* weight, const float* bias, int64_t channels, int64_t width, int64_t stride, bool relu, bool sum);

  // dst = relu?(conv(src) + bias (+ dst when summing)) for `n` samples of [channels, ih, iw] ->
  // [channels, oh, ow]; `bf16` says the storage of src and dst is bfloat16 (else float). Parallel
  // over samples, channel blocks and output rows with OpenMP.
  void Run(const void* src, const BlockStrides& s, int64_t ih, int64_t iw, void* dst, const BlockStrides& d, int64_t oh, int64_t ow,
           int64_t n, bool bf16) const;

  const char* Name() const { return width_ == 4 ? "residual:grouped3x3:g4" : "residual:grouped3x3:g8"; }
  size_t Bytes() const { return (packed_.size() + bias_.size()) * sizeof(float); }

 private:
  int64_t channels_, width_, stride_;
  bool relu_, sum_;
  // Per channel block, tap and rotation r, 16 lanes: lane j holds the weight from input channel
  // j % width to output channel (j + r) % width of its group (see the kernel for why).
  std::vector<float> packed_;
  std::vector<float> bias_;
  std::vector<int32_t> rot_;  // [W][16] permute indices: lane k takes lane (k - r) % W of its group
};

}  // namespace residual
