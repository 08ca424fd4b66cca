// The tensor ops exported to JS (fromArray, read, zeros, reshape, dispose, byteSize) and the
// engine's introspection and configuration (info, stats, implementations, configure, setNumThreads):
// argument parsing and JS objects only; the copies and layout conversions are tensor.cc's.
#include <omp.h>

#include "common.h"
#include "napi_args.h"

namespace residual {

// ---------------------------------------------------------------- memory ops

namespace {

Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 2 && info[0].IsTypedArray(), "data must be a Float32Array");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  Require(ta.TypedArrayType() == napi_float32_array, "data must be a Float32Array");
  Napi::Float32Array data = ta.As<Napi::Float32Array>();
  dims shape = ArgDims(info, 1);
  int64_t n = Product(shape);
  Require(static_cast<int64_t>(data.ElementLength()) == n,
          "data has " + std::to_string(data.ElementLength()) + " elements but the shape needs " + std::to_string(n));
  NewT r = NewPlain(info.Env(), shape);
  CopyFromRowMajor(r.t, data.Data());
  return r.obj;
}

// Zeros are zeros in every layout, so a 4-D one starts in the activation layout (NHWC): gradient
// accumulators then need no reorder. A weight made by zeros relayouts itself to plain on first use.
Napi::Value Zeros(const Napi::CallbackInfo& info) {
  dims shape = ArgDims(info, 0);
  NewT r = NewCanon(info.Env(), shape);
  FillZero(r.t);
  return r.obj;
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  Tensor* t = ArgTensor(info, 0);
  Require(t->layout != Layout::Opaque, "an argmax tensor is an opaque oneDNN workspace and cannot be read");
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(t->Numel()));
  CopyToRowMajor(*t, out.Data());
  return out;
}

Napi::Value Reshape(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  dims shape = ArgDims(info, 1);
  Require(Product(shape) == x->Numel(), "reshape must keep the element count");
  Require(x->layout != Layout::Opaque, "cannot reshape an opaque tensor");
  if (ReshapeKeepsLayout(*x, shape)) {
    NewT r = NewTensor(info.Env(), shape, Layout::NHWC, x->md);
    CopyBytes(*x, r.t);
    return r.obj;
  }
  NewT r = NewPlain(info.Env(), shape);
  CopyToRowMajor(*x, r.t->Data());
  return r.obj;
}

Napi::Value DisposeFn(const Napi::CallbackInfo& info) {
  // Disposing twice is harmless; disposing something that is not a tensor is an error.
  Require(info.Length() >= 1 && IsTensorObject(info.Env(), info[0]), "argument 0 is not a native tensor");
  DisposeTensorObject(info.Env(), info[0]);
  return info.Env().Undefined();
}

Napi::Value ByteSize(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && IsTensorObject(info.Env(), info[0]), "argument 0 is not a native tensor");
  Tensor* t = TensorOf(info.Env(), info[0]);
  return Napi::Number::New(info.Env(), t ? static_cast<double>(t->Bytes()) : 0.0);
}

}  // namespace

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const dnnl_version_t* v = dnnl_version();
  Napi::Object o = Napi::Object::New(env);
  o.Set("onednnVersion", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  o.Set("isa", IsaName(dnnl::get_effective_cpu_isa()));
  o.Set("threads", omp_get_max_threads());
  return o;
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveTensors", static_cast<double>(LiveTensors()));
  o.Set("liveBytes", static_cast<double>(LiveBytes()));
  o.Set("primitivesCreated", static_cast<double>(CachedPrimitiveCount()));
  o.Set("scratchpadBytes", static_cast<double>(ScratchBytes()));
  o.Set("pooledBytes", static_cast<double>(PooledBytes()));
  o.Set("footprintBytes", static_cast<double>(FootprintBytes()));
  return o;
}

Napi::Value Impls(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& impls = RecordedImpls();
  Napi::Array a = Napi::Array::New(env, impls.size());
  for (size_t i = 0; i < impls.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("key", impls[i].first);
    o.Set("impl", impls[i].second);
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

Napi::Value ReleasePool(const Napi::CallbackInfo& info) {
  PoolRelease();
  return info.Env().Undefined();
}

Napi::Value ClearImpls(const Napi::CallbackInfo& info) {
  ClearRecordedImpls();
  return info.Env().Undefined();
}

// setNumThreads(n): OpenMP threads for the calling (JS) thread's parallel regions.
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = ArgInt(info, 0);
  Require(n >= 1 && n <= 1024, "threads must be between 1 and 1024");
  omp_set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}

// configure({ poolBytes, refuseRef, groupedOnednn }): the engine configuration TypeScript reads once
// at initBackend (src/backend/config.ts).
Napi::Value ConfigureFn(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsObject(), "expected an engine configuration object");
  Napi::Object o = info[0].As<Napi::Object>();
  EngineConfig c;
  Napi::Value pool = o.Get("poolBytes");
  Require(pool.IsNumber() && pool.As<Napi::Number>().DoubleValue() >= 0, "poolBytes must be a non-negative number");
  c.pool_cap_bytes = static_cast<size_t>(pool.As<Napi::Number>().DoubleValue());
  c.refuse_ref = o.Get("refuseRef").ToBoolean().Value();
  c.grouped_onednn = o.Get("groupedOnednn").ToBoolean().Value();
  Configure(c);
  return info.Env().Undefined();
}

}  // namespace

void RegisterTensorOps(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTensor", InitTensorClass(env));
  Export(env, exports, "fromArray", FromArray);
  Export(env, exports, "zeros", Zeros);
  Export(env, exports, "read", Read);
  Export(env, exports, "reshape", Reshape);
  Export(env, exports, "dispose", DisposeFn);
  Export(env, exports, "byteSize", ByteSize);
  Export(env, exports, "info", Info);
  Export(env, exports, "stats", Stats);
  Export(env, exports, "implementations", Impls);
  Export(env, exports, "clearImplementations", ClearImpls);
  Export(env, exports, "releasePool", ReleasePool);
  Export(env, exports, "setNumThreads", SetNumThreads);
  Export(env, exports, "configure", ConfigureFn);
}

}  // namespace residual
