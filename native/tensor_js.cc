// The JS class that carries a Tensor (tensor_js.h): constructor, dispose, finalizer, accessors, and
// the making and unwrapping of tensor objects.
#include "tensor_js.h"

#include "engine_env.h"

namespace residual {

namespace {
struct InstanceData {
  Napi::FunctionReference ctor;
};
}  // namespace

Napi::Function TensorClass(Napi::Env env) { return env.GetInstanceData<InstanceData>()->ctor.Value(); }

namespace {

// The tensor wrapped in `v` (null when none: disposed, or not made by our constructor).
Tensor* Wrapped(napi_env env, napi_value v) {
  void* p = nullptr;
  if (napi_unwrap(env, v, &p) != napi_ok) return nullptr;
  return static_cast<Tensor*>(p);
}

void FinalizeTensor(napi_env env, void* data, void* /*hint*/) {
  auto* t = static_cast<Tensor*>(data);
  RunWhenEngineFree(env, [t]() { delete t; });
}

napi_value JsConstruct(napi_env env, napi_callback_info cb) {
  napi_value self;
  if (napi_get_cb_info(env, cb, nullptr, nullptr, &self, nullptr) != napi_ok) return nullptr;
  auto* t = new Tensor();
  if (napi_wrap(env, self, t, FinalizeTensor, nullptr, nullptr) != napi_ok) {
    delete t;
    napi_throw_error(env, nullptr, "native tensor: cannot attach native state");
    return nullptr;
  }
  return self;
}

napi_value This(napi_env env, napi_callback_info cb) {
  napi_value self = nullptr;
  napi_get_cb_info(env, cb, nullptr, nullptr, &self, nullptr);
  return self;
}

napi_value JsDispose(napi_env env, napi_callback_info cb) {
  // No lock here: DisposeTensorObject frees under the lock when it is free and defers otherwise, so
  // disposing (tidy, the FinalizationRegistry backstop) never waits for an asynchronous run.
  DisposeTensorObject(env, This(env, cb));
  napi_value undef;
  napi_get_undefined(env, &undef);
  return undef;
}

napi_value JsDisposed(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  napi_value r;
  napi_get_boolean(env, t == nullptr || !t->Alive(), &r);
  return r;
}

napi_value JsByteSize(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  napi_value r;
  napi_create_double(env, t ? static_cast<double>(t->Bytes()) : 0.0, &r);
  return r;
}

napi_value JsLayout(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  const char* s = t == nullptr || !t->Alive() ? "disposed"
                  : t->layout == Layout::NHWC ? "nhwc"
                  : t->layout == Layout::Plain ? "plain" : "opaque";
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

// How the values are stored: "float32", or "bfloat16" (the activations of bf16 training).
napi_value JsStorage(napi_env env, napi_callback_info cb) {
  Tensor* t = Wrapped(env, This(env, cb));
  const char* s = t == nullptr || !t->Alive() ? "disposed" : t->layout == Layout::Opaque ? "opaque" : t->Bf16() ? "bfloat16" : "float32";
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

}  // namespace

void DisposeTensorObject(napi_env env, napi_value obj) {
  void* p = nullptr;
  if (napi_remove_wrap(env, obj, &p) == napi_ok && p != nullptr) {
    auto* t = static_cast<Tensor*>(p);
    RunWhenEngineFree(env, [t]() { delete t; });
  }
}

Napi::Function InitTensorClass(Napi::Env env) {
  const napi_property_attributes acc = static_cast<napi_property_attributes>(napi_enumerable | napi_configurable);
  napi_property_descriptor props[] = {
      {"dispose", nullptr, JsDispose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"disposed", nullptr, nullptr, JsDisposed, nullptr, nullptr, acc, nullptr},
      {"byteSize", nullptr, nullptr, JsByteSize, nullptr, nullptr, acc, nullptr},
      {"layout", nullptr, nullptr, JsLayout, nullptr, nullptr, acc, nullptr},
      {"storage", nullptr, nullptr, JsStorage, nullptr, nullptr, acc, nullptr},
  };
  napi_value cls;
  NAPI_THROW_IF_FAILED(env, napi_define_class(env, "NativeTensor", NAPI_AUTO_LENGTH, JsConstruct, nullptr,
                                              sizeof(props) / sizeof(props[0]), props, &cls),
                       Napi::Function());
  Napi::Function f(env, cls);
  auto* data = new InstanceData();
  data->ctor = Napi::Persistent(f);
  env.SetInstanceData<InstanceData>(data);
  return f;
}

NewT NewTensor(Napi::Env env, const dims& shape, Layout layout, const memory::desc& md) {
  Napi::Object obj = TensorClass(env).New({});
  Tensor* t = Wrapped(env, obj);
  Require(t != nullptr, "cannot create a tensor object");
  t->Allocate(shape, layout, md);
  Napi::Array arr = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  arr.Freeze();
  obj.DefineProperty(Napi::PropertyDescriptor::Value("shape", arr, napi_enumerable));
  return {obj, t};
}

NewT NewCanon(Napi::Env env, const dims& shape) {
  Layout l;
  memory::desc md = CanonMd(shape, &l);
  return NewTensor(env, shape, l, md);
}

NewT NewPlain(Napi::Env env, const dims& shape) { return NewTensor(env, shape, Layout::Plain, PlainMd(shape)); }
// The tensor behind `v`, or null when `v` is not a tensor made by this environment (including an
// object that merely has the tensor prototype).
bool IsTensorObject(Napi::Env env, Napi::Value v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(TensorClass(env));
}

Tensor* TensorOf(Napi::Env env, Napi::Value v) {
  if (!IsTensorObject(env, v)) return nullptr;
  return Wrapped(env, v);
}

}  // namespace residual
