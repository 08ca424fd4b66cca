// The compiled inference plan as pure C++: a plan description (PlanSpec: shapes, buffers, the ops
// with their weights, the layout and algorithm decisions made in TypeScript) built once into a
// fixed list of oneDNN primitives (plan.cc). The Node-API wrapper and the async worker are in
// plan_binding.cc.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"
#include "grouped_conv.h"

namespace residual {

struct Shape3 {
  int64_t c = 0, h = 0, w = 0;
  int64_t Size() const { return c * h * w; }
};

enum class OpKind { Conv, MaxPool, AvgPool, ShortcutA, GlobalAvgPool, Linear };

// One op of the plan: the description fields (set from the plan description), then what building
// the plan derives from them (weights reordered and quantized).
struct OpDesc {
  OpKind kind;
  int src = -1, dst = -1;
  Shape3 in, out;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  bool relu = false, sum = false;
  // int8 plans: the calibrated scale of this op's output (x = qscale * q; 0: none), whether it needs
  // a sign (s8) or not (u8), and `keep` for an op that stays f32 (the stem conv, say).
  float qscale = 0;
  bool qsigned = false, keep = false;
  std::vector<float> weight, bias;  // plain OIHW / [out, in]; emptied once reordered
  std::vector<int8_t> qweight;      // int8 plans: the weights quantized per output channel (scales in wscale)
  std::vector<float> wscale;
  memory wei;                       // weights in the format of the first primitive built
  std::vector<memory> wei_other;    // copies in the other formats later batch sizes chose
  memory bia;
  std::shared_ptr<GroupedConv3x3> narrow;  // our kernel for 4/8-channel groups (weights packed once)
  std::string name;
};

enum class PlanDtype { F32, Bf16, Int8 };

// A plan description. The decisions are made by TypeScript (src/backend/config.ts); an empty string
// means "the plan's measured default" (Plan::Choose).
struct PlanSpec {
  Shape3 input;
  int64_t max_batch = 1;
  int64_t buffers = 1;
  int input_buf = 0;
  PlanDtype dtype = PlanDtype::F32;
  std::string layout;    // "", nhwc, blocked, any
  std::string winograd;  // "", "1", "0"
  std::string strided;   // "", nhwc
  std::string grouped;   // "", own, onednn
  std::vector<OpDesc> ops;
};

class Plan;
struct PlanDeleter {
  void operator()(Plan* p) const;
};
using PlanPtr = std::unique_ptr<Plan, PlanDeleter>;

// Allocates the buffers and builds every primitive for the full batch (weights reordered once).
// Caller holds GlobalLock.
PlanPtr BuildPlan(PlanSpec spec);

// What the binding needs to check a run's arguments and report on the plan.
struct PlanFacts {
  Shape3 input, output;  // per sample; the output is the last op's
  int64_t max_batch;
  bool f32;              // only an f32 plan can be calibrated
  size_t bytes;
  const std::vector<std::pair<std::string, std::string>>* impls;  // op -> oneDNN implementation
};
PlanFacts FactsOf(const Plan& plan);

// Runs the plan on `n` NCHW samples at `x` and writes its output (n x output, f32 NCHW) to `out`.
// Caller holds GlobalLock.
void RunPlan(Plan& plan, const float* x, int64_t n, float* out);

// Runs an f32 plan on `n` samples and returns each op's output range over them: [min0, max0, ...].
// Caller holds GlobalLock.
std::vector<float> CalibratePlan(Plan& plan, const float* x, int64_t n);

}  // namespace residual
