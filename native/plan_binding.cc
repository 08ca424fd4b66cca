// The inference plan's Node-API face: planCreate parses a plan description object into a PlanSpec
// (plan.h) once; planRun, planCalibrate, planInfo and planDispose work on the handle; planRunAsync
// runs the plan on a libuv pool thread.
#include <omp.h>

#include <cmath>
#include <cstring>

#include "common.h"
#include "engine_env.h"
#include "napi_args.h"
#include "plan.h"

namespace residual {
namespace {

// The JS handle: an External that owns the plan until dispose() or garbage collection.
struct PlanBox {
  PlanPtr plan;
};

int64_t Int(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  Require(v.IsNumber(), std::string("plan op field \"") + k + "\" must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  Require(d == static_cast<double>(static_cast<int64_t>(d)) && d >= 0, std::string("plan op field \"") + k + "\" must be a non-negative integer");
  return static_cast<int64_t>(d);
}
bool Bool(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsBoolean() && v.As<Napi::Boolean>().Value();
}
Shape3 Shape(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  Require(v.IsArray() && v.As<Napi::Array>().Length() == 3, std::string("plan op field \"") + k + "\" must be [C, H, W]");
  Napi::Array a = v.As<Napi::Array>();
  Shape3 s;
  s.c = a.Get(0u).As<Napi::Number>().Int64Value();
  s.h = a.Get(1u).As<Napi::Number>().Int64Value();
  s.w = a.Get(2u).As<Napi::Number>().Int64Value();
  Require(s.c >= 1 && s.h >= 1 && s.w >= 1, std::string("plan op field \"") + k + "\" must be positive");
  return s;
}
std::vector<float> Floats(const Napi::Object& o, const char* k, size_t expect) {
  Napi::Value v = o.Get(k);
  Require(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array,
          std::string("plan op field \"") + k + "\" must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  Require(a.ElementLength() == expect, std::string("plan op field \"") + k + "\" has " + std::to_string(a.ElementLength()) +
                                           " values, expected " + std::to_string(expect));
  return std::vector<float>(a.Data(), a.Data() + expect);
}

// planCreate({ input: [C,H,W], maxBatch, buffers, inputBuffer, ops: [...] }) -> handle
Napi::Value PlanCreate(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsObject(), "expected a plan description object");
  Napi::Object d = info[0].As<Napi::Object>();
  PlanSpec spec;
  spec.input = Shape(d, "input");
  spec.max_batch = Int(d, "maxBatch");
  spec.buffers = Int(d, "buffers");
  spec.input_buf = static_cast<int>(Int(d, "inputBuffer"));
  if (d.Has("dtype")) {
    std::string t = d.Get("dtype").ToString().Utf8Value();
    Require(t == "f32" || t == "bf16" || t == "int8", "dtype must be \"f32\", \"bf16\" or \"int8\", got \"" + t + "\"");
    spec.dtype = t == "int8" ? PlanDtype::Int8 : t == "bf16" ? PlanDtype::Bf16 : PlanDtype::F32;
  }
  // The layout, Winograd, strided and grouped-kernel decisions come as data (src/infer/compile.ts reads
  // the RESIDUAL_PLAN_* switches and the caller's winograd option); empty means "the plan decides".
  auto str = [&](const char* k) { return d.Has(k) && d.Get(k).IsString() ? d.Get(k).ToString().Utf8Value() : std::string(); };
  spec.layout = str("layout");
  std::string w = str("winograd");
  Require(w.empty() || w == "auto" || w == "on" || w == "off", "winograd must be \"auto\", \"on\" or \"off\", got \"" + w + "\"");
  spec.winograd = w == "on" ? "1" : w == "off" ? "0" : "";
  spec.strided = str("strided");
  spec.grouped = str("grouped");
  Require(spec.grouped.empty() || spec.grouped == "onednn" || spec.grouped == "own",
          "grouped must be own or onednn, got \"" + spec.grouped + "\"");
  Require(spec.layout.empty() || spec.layout == "nhwc" || spec.layout == "blocked" || spec.layout == "any",
          "layout must be nhwc, blocked or any, got \"" + spec.layout + "\"");
  Napi::Value opsv = d.Get("ops");
  Require(opsv.IsArray(), "ops must be an array");
  Napi::Array arr = opsv.As<Napi::Array>();
  Require(arr.Length() >= 1, "a plan needs at least one op");
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Require(arr.Get(i).IsObject(), "every op must be an object");
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    std::string type = o.Get("type").ToString().Utf8Value();
    OpDesc op;
    op.name = o.Has("name") ? o.Get("name").ToString().Utf8Value() : type + std::to_string(i);
    op.src = static_cast<int>(Int(o, "src"));
    op.dst = static_cast<int>(Int(o, "dst"));
    op.in = Shape(o, "in");
    op.out = Shape(o, "out");
    if (type == "conv") {
      op.kind = OpKind::Conv;
      op.kh = Int(o, "kh"); op.kw = Int(o, "kw"); op.sh = Int(o, "sh"); op.sw = Int(o, "sw");
      op.ph = Int(o, "ph"); op.pw = Int(o, "pw"); op.dh = Int(o, "dh"); op.dw = Int(o, "dw");
      op.groups = Int(o, "groups");
      op.relu = Bool(o, "relu");
      op.sum = Bool(o, "sum");
      op.keep = Bool(o, "keep");
      Require(op.groups >= 1 && op.in.c % op.groups == 0 && op.out.c % op.groups == 0, op.name + ": channels must divide by groups");
      Require(op.sh >= 1 && op.sw >= 1 && op.dh >= 1 && op.dw >= 1 && op.kh >= 1 && op.kw >= 1, op.name + ": bad kernel, stride or dilation");
      Require(op.out.h == (op.in.h + 2 * op.ph - op.dh * (op.kh - 1) - 1) / op.sh + 1 &&
                  op.out.w == (op.in.w + 2 * op.pw - op.dw * (op.kw - 1) - 1) / op.sw + 1,
              op.name + ": output size does not match the convolution");
      Require(!op.sum || op.src != op.dst, op.name + ": a summing conv cannot read its own dst");
      op.weight = Floats(o, "weight", static_cast<size_t>(op.out.c * (op.in.c / op.groups) * op.kh * op.kw));
      op.bias = Floats(o, "bias", static_cast<size_t>(op.out.c));
    } else if (type == "maxpool" || type == "avgpool") {
      op.kind = type == "maxpool" ? OpKind::MaxPool : OpKind::AvgPool;
      op.kh = Int(o, "kh"); op.kw = Int(o, "kw"); op.sh = Int(o, "sh"); op.sw = Int(o, "sw");
      op.ph = Int(o, "ph"); op.pw = Int(o, "pw");
      Require(op.in.c == op.out.c && op.sh >= 1 && op.sw >= 1 && op.ph * 2 <= op.kh && op.pw * 2 <= op.kw, op.name + ": bad pooling window");
    } else if (type == "shortcutA") {
      op.kind = OpKind::ShortcutA;
      op.sh = op.sw = Int(o, "stride");
      Require(op.sh >= 1 && op.out.c >= op.in.c && op.out.h == (op.in.h + op.sh - 1) / op.sh &&
                  op.out.w == (op.in.w + op.sw - 1) / op.sw, op.name + ": bad option-A shortcut");
    } else if (type == "gap") {
      op.kind = OpKind::GlobalAvgPool;
      Require(op.out.c == op.in.c && op.out.h == 1 && op.out.w == 1, op.name + ": global pool output must be [C, 1, 1]");
    } else if (type == "linear") {
      op.kind = OpKind::Linear;
      Require(op.out.h == 1 && op.out.w == 1, op.name + ": linear output must be [classes, 1, 1]");
      op.weight = Floats(o, "weight", static_cast<size_t>(op.out.c * op.in.Size()));
      op.bias = Floats(o, "bias", static_cast<size_t>(op.out.c));
    } else {
      throw OpError("unknown plan op type \"" + type + "\"");
    }
    Require(op.src != op.dst || op.kind == OpKind::Conv, op.name + ": src and dst must differ");
    if (o.Has("qscale")) {  // int8 plans: the calibrated scale of this op's output
      Napi::Value q = o.Get("qscale");
      Require(q.IsNumber(), op.name + ": qscale must be a number");
      op.qscale = q.As<Napi::Number>().FloatValue();
      Require(std::isfinite(op.qscale) && op.qscale > 0, op.name + ": qscale must be a positive finite number");
      op.qsigned = Bool(o, "qsigned");
    }
    spec.ops.push_back(std::move(op));
  }
  auto* box = new PlanBox{BuildPlan(std::move(spec))};
  return Napi::External<PlanBox>::New(info.Env(), box, [](Napi::Env env, PlanBox* b) {
    RunWhenEngineFree(env, [b]() { delete b; });
  });
}

Plan* PlanOf(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsExternal(), "argument 0 is not an inference plan");
  PlanBox* box = info[0].As<Napi::External<PlanBox>>().Data();
  Require(box != nullptr && box->plan != nullptr, "the inference plan has been disposed");
  return box->plan.get();
}

// Checks planRun's arguments: the input array and its batch size `n`.
Napi::Float32Array RunInput(const Napi::CallbackInfo& info, const PlanFacts& plan, int64_t* n) {
  Require(info.Length() >= 3 && info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array,
          "input must be a Float32Array");
  Napi::Float32Array x = info[1].As<Napi::Float32Array>();
  *n = ArgInt(info, 2);
  Require(*n >= 1 && *n <= plan.max_batch,
          "batch " + std::to_string(*n) + " is outside 1.." + std::to_string(plan.max_batch) + " (the plan's maxBatch)");
  int64_t per = plan.input.Size();
  Require(static_cast<int64_t>(x.ElementLength()) == *n * per,
          "input has " + std::to_string(x.ElementLength()) + " values; " + std::to_string(*n) + " x [" +
              std::to_string(plan.input.c) + ", " + std::to_string(plan.input.h) + ", " + std::to_string(plan.input.w) +
              "] needs " + std::to_string(*n * per));
  return x;
}

// planCalibrate(handle, x: Float32Array NCHW, n) -> Float32Array [ops x 2]: each op's output range
// (min, max) over this batch, for an f32 plan whose ops an int8 plan will repeat with scales.
Napi::Value PlanCalibrate(const Napi::CallbackInfo& info) {
  Plan* plan = PlanOf(info);
  int64_t n = 0;
  Napi::Float32Array x = RunInput(info, FactsOf(*plan), &n);
  std::vector<float> ranges = CalibratePlan(*plan, x.Data(), n);
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), ranges.size());
  std::memcpy(out.Data(), ranges.data(), ranges.size() * sizeof(float));
  return out;
}

// planRun(handle, x: Float32Array NCHW, n) -> Float32Array [n, ...output] (the logits [n, classes], or features)
Napi::Value PlanRun(const Napi::CallbackInfo& info) {
  Plan* plan = PlanOf(info);
  int64_t n = 0;
  const PlanFacts facts = FactsOf(*plan);
  Napi::Float32Array x = RunInput(info, facts, &n);
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(n * facts.output.Size()));
  RunPlan(*plan, x.Data(), n, out.Data());
  return out;
}

// The asynchronous run: the kernels execute on a libuv pool thread, so the JS thread keeps serving
// its event loop. The input is copied first (the caller may reuse or transfer its array at once);
// the External is referenced so the plan outlives a dropped handle; GlobalLock serializes the run
// with every other native call, and a plan disposed before the run starts rejects the promise.
class PlanRunWorker : public Napi::AsyncWorker {
 public:
  PlanRunWorker(Napi::Env env, Napi::External<PlanBox> handle, const float* x, int64_t n, int64_t out_per_sample)
      : Napi::AsyncWorker(env, "residual:planRunAsync"),
        deferred_(Napi::Promise::Deferred::New(env)),
        handle_(Napi::Persistent(handle)),
        box_(handle.Data()),
        in_(x, x + n * FactsOf(*box_->plan).input.Size()),
        out_(static_cast<size_t>(n * out_per_sample)),
        n_(n),
        threads_(omp_get_max_threads()) {}  // the caller's setting (setNumThreads / OMP_NUM_THREADS)

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    std::lock_guard<std::recursive_mutex> lock(GlobalLock());
    if (box_->plan == nullptr) return SetError("native planRunAsync: the inference plan was disposed before the run started");
    omp_set_num_threads(threads_);
    try {
      RunPlan(*box_->plan, in_.data(), n_, out_.data());
    } catch (const dnnl::error& e) {
      SetError(std::string("native planRunAsync: oneDNN error: ") + e.what());
    } catch (const std::bad_alloc&) {
      SetError("native planRunAsync: out of memory");
    } catch (const std::exception& e) {
      SetError(std::string("native planRunAsync: ") + e.what());
    }
  }
  void OnOK() override {
    Drain();
    Napi::Float32Array out = Napi::Float32Array::New(Env(), out_.size());
    std::memcpy(out.Data(), out_.data(), out_.size() * sizeof(float));
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override {
    Drain();
    deferred_.Reject(e.Value());
  }
  // What GC finalizers queued while this run held the engine (RunWhenEngineFree).
  void Drain() {
    std::lock_guard<std::recursive_mutex> lock(GlobalLock());
    RunDeferred(Env());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::External<PlanBox>> handle_;
  PlanBox* box_;
  std::vector<float> in_, out_;
  int64_t n_;
  int threads_;
};

// planRunAsync(handle, x: Float32Array NCHW, n) -> Promise<Float32Array [n, ...output]>
Napi::Value PlanRunAsync(const Napi::CallbackInfo& info) {
  Plan* plan = PlanOf(info);
  int64_t n = 0;
  const PlanFacts facts = FactsOf(*plan);
  Napi::Float32Array x = RunInput(info, facts, &n);
  auto* worker = new PlanRunWorker(info.Env(), info[0].As<Napi::External<PlanBox>>(), x.Data(), n, facts.output.Size());
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // owned and deleted by node-addon-api after OnOK/OnError
  return promise;
}

Napi::Value PlanDispose(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsExternal(), "argument 0 is not an inference plan");
  PlanBox* box = info[0].As<Napi::External<PlanBox>>().Data();
  box->plan.reset();
  return info.Env().Undefined();
}

// planInfo(handle) -> { bytes, implementations: [{op, impl}] } (the full-batch primitives)
Napi::Value PlanInfo(const Napi::CallbackInfo& info) {
  const PlanFacts facts = FactsOf(*PlanOf(info));
  const auto& impls = *facts.impls;
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", static_cast<double>(facts.bytes));
  Napi::Array a = Napi::Array::New(env, impls.size());
  for (size_t i = 0; i < impls.size(); ++i) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("op", impls[i].first);
    e.Set("impl", impls[i].second);
    a.Set(static_cast<uint32_t>(i), e);
  }
  o.Set("implementations", a);
  return o;
}

}  // namespace

void RegisterInference(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "planCreate", PlanCreate);
  Export(env, exports, "planRun", PlanRun);
  Export(env, exports, "planCalibrate", PlanCalibrate);
  Export(env, exports, "planRunAsync", PlanRunAsync);
  Export(env, exports, "planDispose", PlanDispose);
  Export(env, exports, "planInfo", PlanInfo);
}

}  // namespace residual
