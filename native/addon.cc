// Placeholder entry point; the engine lands in the following commits.
#include <napi.h>
#include <oneapi/dnnl/dnnl.hpp>

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  const dnnl_version_t* v = dnnl_version();
  exports.Set("onednnVersion", Napi::String::New(env,
      std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch)));
  return exports;
}
NODE_API_MODULE(residual_native, Init)
