// The engine's ties to JS environments (engine.cc): which environment the current thread works for
// (ReportExternal tells that one's GC), and the frees that GC finalizers defer while the global
// lock is held. For the Node-API layer only.
#pragma once

#include <node_api.h>

#include <functional>

#include "engine.h"

namespace residual {

// Which JS environment the current thread is working for (set at the N-API boundary).
class EnvScope {
 public:
  explicit EnvScope(napi_env env);
  ~EnvScope();
 private:
  napi_env prev_;
};

// For GC finalizers: runs `fn` under GlobalLock now if the lock is free, else queues it for the next
// native call from the same environment (RunDeferred). A finalizer runs on the JS thread, and
// waiting for the lock there would stall the event loop for a whole asynchronous inference run.
void RunWhenEngineFree(napi_env env, std::function<void()> fn);
// Runs the work queued for `env`; the caller holds GlobalLock on env's JS thread.
void RunDeferred(napi_env env);

}  // namespace residual
