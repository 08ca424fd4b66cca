// Argument parsing and the exported-op trampoline (see napi_args.h).
#include "napi_args.h"

#include "engine_env.h"

#include <cmath>

namespace residual {

Tensor* ArgTensorOrNull(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return ArgTensor(info, i);
}

Tensor* ArgTensor(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length(), "missing tensor argument " + std::to_string(i));
  Tensor* t = TensorOf(info.Env(), info[i]);
  if (t == nullptr) {
    // A disposed tensor has lost its native side: it is still an instance of the class.
    Require(!IsTensorObject(info.Env(), info[i]), "argument " + std::to_string(i) + " is a disposed tensor");
    throw OpError("argument " + std::to_string(i) + " is not a native tensor");
  }
  Require(t->Alive(), "argument " + std::to_string(i) + " is a disposed tensor");
  return t;
}

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsNumber(), "argument " + std::to_string(i) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  Require(std::isfinite(d) && d == std::floor(d), "argument " + std::to_string(i) + " must be an integer");
  return static_cast<int64_t>(d);
}

double ArgNum(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsNumber(), "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsBoolean(), "argument " + std::to_string(i) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

dims ArgSizes(const Napi::CallbackInfo& info, size_t i) {
  Require(i < info.Length() && info[i].IsArray(), "argument " + std::to_string(i) + " must be an array of sizes");
  Napi::Array a = info[i].As<Napi::Array>();
  dims d(a.Length());
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    Require(v.IsNumber(), "sizes must be numbers");
    double x = v.As<Napi::Number>().DoubleValue();
    Require(std::isfinite(x) && x >= 0 && x == std::floor(x) && x < 9.0e15, "sizes must be non-negative integers");
    d[k] = static_cast<int64_t>(x);
  }
  return d;
}

dims ArgDims(const Napi::CallbackInfo& info, size_t i) {
  dims d = ArgSizes(info, i);
  Require(d.size() <= 8, "at most 8 dimensions are supported");
  double total = 1;
  for (auto v : d) total *= static_cast<double>(v);
  Require(total <= 4.0e12, "shape has too many elements");
  return d;
}

namespace {
// Each exported op carries its name and function in the callback data.
struct Slot {
  const char* name;
  OpFn fn;
};
Napi::Value Trampoline(const Napi::CallbackInfo& info) {
  const Slot* slot = static_cast<const Slot*>(info.Data());
  std::lock_guard<std::recursive_mutex> lock(GlobalLock());
  EnvScope scope(info.Env());
  RunDeferred(info.Env());
  try {
    return slot->fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": oneDNN error: " + e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": " + e.what());
  } catch (...) {
    throw Napi::Error::New(info.Env(), std::string("native ") + slot->name + ": unknown failure");
  }
}
}  // namespace

void Export(Napi::Env env, Napi::Object exports, const char* name, OpFn fn) {
  Slot* slot = new Slot{name, fn};  // lives as long as the module
  exports.Set(name, Napi::Function::New(env, Trampoline, name, slot));
}

Tensor* JsOutputs::New(const dims& shape, Layout layout, const memory::desc& md) {
  made_.push_back(NewTensor(env_, shape, layout, md));
  return made_.back().t;
}

Napi::Object JsOutputs::Obj(const Tensor* t) const {
  for (const NewT& m : made_)
    if (m.t == t) return m.obj;
  throw OpError("internal: a result tensor was not made by this op");
}

Napi::Object JsOutputs::Obj(const Grads& g) const {
  Napi::Object out = Napi::Object::New(env_);
  if (g.dx) out.Set("dx", Obj(g.dx));
  if (g.dw) out.Set("dw", Obj(g.dw));
  if (g.db) out.Set("db", Obj(g.db));
  return out;
}

}  // namespace residual
