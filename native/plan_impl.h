// The Plan class behind plan.h, for the files that build it: plan.cc (buffers, layouts, the f32/bf16
// steps, running), plan_int8.cc (the quantized conv) and plan_grouped.cc (the narrow grouped conv on
// our own kernel). Private to the plan; the binding sees only plan.h.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "plan.h"

namespace residual {

// Activation layouts (RESIDUAL_PLAN_LAYOUT): NHWC for every step (brgconv kernels), nChw16c for
// every step (jit kernels; the first conv reads the caller's NCHW array itself), or whatever each
// conv's `any` picks, with a reorder wherever a consumer wants another format than its producer wrote.
enum class ActLayout { Nhwc, Blocked, Any };

const char* LayoutName(ActLayout l);

// One batch size's primitives and the memory objects they run on.
struct Program {
  std::vector<std::function<void()>> steps;
  // Per op: how many steps have run once its output is complete, and that output (calibration).
  std::vector<std::pair<size_t, memory>> marks;
  memory user_in;  // NCHW over the caller's array (data handle set per run)
  // The output: either `result`, a value already laid out as f32 [N, C, H, W] (copied out after the
  // steps), or `user_out`, f32 NCHW over the caller's output array that the last step reorders into.
  memory result, user_out;
};

class Plan {
 public:
  Shape3 input;
  int64_t max_batch = 1;
  dt act = dt::f32;  // activations and weights; bias, accumulation and the logits stay f32
  bool int8 = false;  // convs in int8 (act stays f32 for the steps that are not quantized)
  size_t esize = 4;
  Shape3 output;  // per sample: the last op's output ([classes, 1, 1] for the head)
  int input_buf = 0, output_buf = 0;
  // The caller's decisions for A/B runs (PlanSpec; see native/README.md); empty: the measured defaults
  // of Choose().
  std::string want_layout, want_winograd, want_strided, want_grouped;
  std::vector<OpDesc> ops;
  std::vector<float*> bufs;
  std::vector<std::pair<void*, size_t>> spares;  // extra buffers: reordered copies, oversized values (Temp)
  std::vector<int64_t> buf_floats;  // per sample, channels rounded up to 16 (room for nChw16c)
  std::map<int64_t, Program> programs;
  size_t bytes = 0;
  std::vector<std::pair<std::string, std::string>> impls;

  ~Plan();

  // The layout and algorithms for batch `n` (every program of a plan may differ).
  void Choose(int64_t n);

  Program& Get(int64_t n) {
    auto it = programs.find(n);
    if (it != programs.end()) return it->second;
    return programs.emplace(n, Build(n)).first->second;
  }

 private:
  // The choices of the program being built (Choose).
  ActLayout layout = ActLayout::Nhwc;
  bool winograd = false;      // 3x3 stride-1 f32 convs as Winograd (blocked only)
  bool strided_nhwc = false;  // strided 3x3s of a blocked plan run NHWC (brgconv), reorders around them

  // Winograd pays off where the channels are wide; on the 16-64-channel CIFAR convs it does not.
  static bool WinogradEligible(const OpDesc& op);

  // While a program is built: the memory that holds each buffer's current value (a view of the
  // buffer in its producer's format, the caller's input, or a temporary when that format is larger
  // than the buffer).
  std::vector<memory> val_;
  std::vector<std::vector<memory>> copies_;  // reordered copies of each current value, reused by later readers
  // int8 plans, per buffer: the scale of its value's int8 form (x = scale * q; 0: not calibrated) and
  // whether that form is s8. Set by the producer: an int8 step's own scale, else its op's calibration.
  std::vector<float> scale_;
  std::vector<char> signed_;

  static bool IsInt8(dt t) { return t == dt::u8 || t == dt::s8; }
  static dt DtOf(const memory& m) { return m.get_desc().data_type(); }

  static memory::desc Md(const Shape3& s, int64_t n, dt t, tag f) { return memory::desc({n, s.c, s.h, s.w}, t, f); }
  // The format this plan wants for an activation of `s` (before any per-step fallback).
  memory::desc Pref(const Shape3& s, int64_t n) const;
  size_t Capacity(int buf) const { return static_cast<size_t>(buf_floats[buf] * max_batch) * sizeof(float); }

  void Impl(const std::string& name, int64_t n, const char* impl);
  // Memory for a value outside the plan's buffers (a reordered copy, a value larger than its
  // buffer): a spare buffer that holds no live value, else a new one. Spares are shared by all
  // programs (they run one at a time) and freed with the plan.
  memory Temp(const memory::desc& md);
  // The value of buffer `buf` in the format `want`: its memory, or a temporary that a reorder step
  // fills from it first.
  memory Need(Program& p, int buf, const memory::desc& want, const std::string& name, int64_t n);
  // Where a step writes buffer `buf` in the format `md` (which becomes the buffer's value).
  memory Out(int buf, const memory::desc& md);
  // Whether any buffer's current value (or a copy of it) lives at `ptr`.
  bool Live(const void* ptr) const;
  // The value of `buf` as activations of this plan's data type (the input arrives as f32).
  memory Act(Program& p, int buf, const Shape3& s, int64_t n, const std::string& name);

  // Weights for a primitive that wants `want`: the stored copy, or a one-off reorder of it. The
  // plain copy is dropped once reordered, except behind a Winograd format (which oneDNN cannot
  // reorder into anything else, should another batch size want another format).
  memory Ready(OpDesc& op, const memory::desc& plain, const memory::desc& want);
  static bool Stored(const OpDesc& op, const memory::desc& md);
  memory Bias(OpDesc& op, int64_t len);

  // ResNeXt's 3x3 convs with 4 or 8 channels per group: oneDNN has no kernel for them in the plan's
  // layouts (it would pick nChw4c/nChw8c, reorder on each side and run at a third of the rate), so
  // they run GroupedConv3x3 on the plan's nChw16c or NHWC buffers.
  bool Narrow(const OpDesc& op) const;

  void AddNarrowGroupedConv(Program& p, OpDesc& op, int64_t n);

  // The weights as s8, symmetric per output channel: W[oc] = wscale[oc] * q (once per op).
  static void QuantizeWeights(OpDesc& op);

  // A conv in int8: src u8/s8 (the value as it is, or quantized with its calibrated scale), s8
  // weights, dst u8 after a ReLU else s8. oneDNN 2.x adds the bias before the output scales, so the
  // bias arrives pre-divided by src scale x weight scale. A residual sum reads the shortcut in its
  // own int8 type and scale (sum post-op with a scale and data type); the ReLU comes last.
  void AddConvInt8(Program& p, OpDesc& op, int64_t n);

  void AddConv(Program& p, OpDesc& op, int64_t n);

  // Max, average (over the pixels inside the input: PyTorch's count_include_pad=False) or global
  // average pooling on whatever layout its input has (dst `any` follows the src). Ceil mode arrives
  // as an output size that needs more right padding than `ph`/`pw`, which oneDNN also excludes.
  void AddPool(Program& p, OpDesc& op, int64_t n, bool global);

  void AddLinear(Program& p, OpDesc& op, int64_t n);

  // CIFAR option A: the input subsampled by the stride, zero channels either side. NHWC, or nChw16c
  // when the plan is blocked and both channel counts divide by 16.
  void AddShortcutA(Program& p, OpDesc& op, int64_t n);

  Program Build(int64_t n);

  // The last op's value as f32 NCHW. The head's logits, and a global pool's output in f32 (NCHW,
  // NHWC or nChw16c with whole blocks: [N, C, 1, 1] is the same bytes in each), are copied as they
  // are; anything else (a bf16 value, a blocked feature map) gets one reorder into the caller's array.
  void AddOutput(Program& p, int64_t n);
};

}  // namespace residual
