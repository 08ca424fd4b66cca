// The Node-API face of the channel ops (channels.h).
#include "channels.h"
#include "napi_args.h"

namespace residual {
namespace {

// concatChannels([tensors])
Napi::Value ConcatChannelsJs(const Napi::CallbackInfo& info) {
  Require(info.Length() >= 1 && info[0].IsArray(), "expected an array of tensors");
  Napi::Array arr = info[0].As<Napi::Array>();
  Require(arr.Length() >= 1, "concat needs at least one tensor");
  std::vector<Tensor*> xs;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Tensor* t = TensorOf(info.Env(), arr.Get(i));
    Require(t != nullptr, "concat inputs must be native tensors");
    Require(t->Alive(), "concat input " + std::to_string(i) + " is a disposed tensor");
    xs.push_back(t);
  }
  JsOutputs outs(info.Env());
  return outs.Obj(ConcatChannels(xs, outs));
}

// splitChannels(x, sizes)
Napi::Value SplitChannelsJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  dims sizes = ArgSizes(info, 1);
  JsOutputs outs(info.Env());
  std::vector<Tensor*> parts = SplitChannels(x, sizes, outs);
  Napi::Array out = Napi::Array::New(info.Env(), parts.size());
  for (size_t i = 0; i < parts.size(); ++i) out.Set(static_cast<uint32_t>(i), outs.Obj(parts[i]));
  return out;
}

// shortcutA(x, outChannels, stride)
Napi::Value ShortcutAJs(const Napi::CallbackInfo& info) {
  Tensor* x = ArgTensor(info, 0);
  int64_t oc = ArgInt(info, 1), s = ArgInt(info, 2);
  JsOutputs outs(info.Env());
  return outs.Obj(ShortcutA(x, oc, s, outs));
}

// shortcutABackward(dy, inputShape, stride)
Napi::Value ShortcutABackwardJs(const Napi::CallbackInfo& info) {
  Tensor* dy = ArgTensor(info, 0);
  dims in = ArgDims(info, 1);
  int64_t s = ArgInt(info, 2);
  JsOutputs outs(info.Env());
  return outs.Obj(ShortcutABackward(dy, in, s, outs));
}

}  // namespace

void RegisterChannels(Napi::Env env, Napi::Object exports) {
  Export(env, exports, "concatChannels", ConcatChannelsJs);
  Export(env, exports, "splitChannels", SplitChannelsJs);
  Export(env, exports, "shortcutA", ShortcutAJs);
  Export(env, exports, "shortcutABackward", ShortcutABackwardJs);
}

}  // namespace residual
