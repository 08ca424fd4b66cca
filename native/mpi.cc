// residual_mpi: a thin Open MPI binding for data-parallel training (src/distributed/). A separate
// addon from residual_native, built only where MPI is installed (binding.gyp asks
// scripts/mpi-config.mjs), so the engine never links libmpi and builds the same without it.
//
// Every MPI call runs on one communication thread, which also calls MPI_Init_thread (so the
// FUNNELED level suffices). JavaScript queues collectives on it and waits for them later: an
// allreduce started during backward runs while the JS thread keeps computing the rest of backward.
// A wait has a timeout: a rank that died or hangs makes the others throw a clear error instead of
// blocking forever (the caller then calls abort(), which ends every rank through mpirun).
#include <napi.h>
#include <mpi.h>
#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

namespace {

using Clock = std::chrono::steady_clock;

enum class Kind { Init, Allreduce, Broadcast, Barrier, Finalize };

struct Job {
  Kind kind;
  void* data = nullptr;
  int count = 0;
  MPI_Datatype type = MPI_FLOAT;
  MPI_Op op = MPI_SUM;
  int root = 0;
  bool done = false;
  std::string error;
  double seconds = 0;   // time inside the MPI call
  double queued = 0;    // time from enqueue to the start of the MPI call
  Clock::time_point enqueued;
  Napi::ObjectReference keep;  // the typed array stays alive until the job is waited for
};

struct Comm {
  std::mutex mu;
  std::condition_variable cv_work, cv_done;
  std::deque<std::shared_ptr<Job>> queue;
  std::thread thread;
  bool started = false, finalized = false;
  int rank = 0, size = 1, provided = 0;
  std::string version;
  double busySeconds = 0;
  double bytesReduced = 0;
};

Comm& C() {
  static Comm* c = new Comm();  // never destroyed: the thread may still be inside MPI at exit
  return *c;
}

std::string MpiError(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

void Run(Job& j) {
  Comm& c = C();
  int rc = MPI_SUCCESS;
  switch (j.kind) {
    case Kind::Init: {
      int already = 0;
      MPI_Initialized(&already);
      if (!already) rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &c.provided);
      if (rc == MPI_SUCCESS) {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &c.size);
        char v[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = 0;
        MPI_Get_library_version(v, &len);
        c.version.assign(v, strnlen(v, len));
        while (!c.version.empty() && (c.version.back() == '\n' || c.version.back() == '\0')) c.version.pop_back();
      }
      break;
    }
    case Kind::Allreduce:
      rc = MPI_Allreduce(MPI_IN_PLACE, j.data, j.count, j.type, j.op, MPI_COMM_WORLD);
      break;
    case Kind::Broadcast:
      rc = MPI_Bcast(j.data, j.count, j.type, j.root, MPI_COMM_WORLD);
      break;
    case Kind::Barrier:
      rc = MPI_Barrier(MPI_COMM_WORLD);
      break;
    case Kind::Finalize:
      rc = MPI_Finalize();
      break;
  }
  if (rc != MPI_SUCCESS) j.error = MpiError(rc);
}

void Loop() {
  Comm& c = C();
  for (;;) {
    std::shared_ptr<Job> j;
    {
      std::unique_lock<std::mutex> lk(c.mu);
      c.cv_work.wait(lk, [&] { return !c.queue.empty(); });
      j = c.queue.front();
      c.queue.pop_front();
    }
    auto t0 = Clock::now();
    Run(*j);
    auto t1 = Clock::now();
    {
      std::lock_guard<std::mutex> lk(c.mu);
      j->seconds = std::chrono::duration<double>(t1 - t0).count();
      j->queued = std::chrono::duration<double>(t0 - j->enqueued).count();
      if (j->kind == Kind::Allreduce) {
        c.busySeconds += j->seconds;
        int tsize = 0;
        MPI_Type_size(j->type, &tsize);
        c.bytesReduced += double(j->count) * tsize;
      }
      j->done = true;
    }
    c.cv_done.notify_all();
    if (j->kind == Kind::Finalize) return;
  }
}

void Enqueue(const std::shared_ptr<Job>& j) {
  Comm& c = C();
  j->enqueued = Clock::now();
  {
    std::lock_guard<std::mutex> lk(c.mu);
    c.queue.push_back(j);
  }
  c.cv_work.notify_one();
}

const char* KindName(Kind k) {
  switch (k) {
    case Kind::Init: return "init";
    case Kind::Allreduce: return "allreduce";
    case Kind::Broadcast: return "broadcast";
    case Kind::Barrier: return "barrier";
    case Kind::Finalize: return "finalize";
  }
  return "?";
}

// Blocks the JS thread until the job is done or `timeoutMs` passes (<= 0: no limit).
void Wait(Napi::Env env, Job& j, double timeoutMs) {
  Comm& c = C();
  std::unique_lock<std::mutex> lk(c.mu);
  auto ready = [&] { return j.done; };
  if (timeoutMs > 0) {
    if (!c.cv_done.wait_for(lk, std::chrono::duration<double, std::milli>(timeoutMs), ready)) {
      throw Napi::Error::New(env, std::string("mpi ") + KindName(j.kind) + " on rank " + std::to_string(c.rank) + " of " +
        std::to_string(c.size) + " did not complete within " + std::to_string(int(timeoutMs / 1000)) +
        " s: another rank has probably died or hangs (RESIDUAL_DIST_TIMEOUT sets the limit in seconds)");
    }
  } else {
    c.cv_done.wait(lk, ready);
  }
  if (!j.error.empty()) throw Napi::Error::New(env, std::string("mpi ") + KindName(j.kind) + ": " + j.error);
}

struct Buffer {
  void* data;
  int count;
  MPI_Datatype type;
};

Buffer TypedArrayArg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(env, std::string(what) + ": expected a Float32Array, Float64Array, Int32Array or Uint8Array");
  auto ta = v.As<Napi::TypedArray>();
  Buffer b;
  b.data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t n = ta.ElementLength();
  if (n > size_t(INT32_MAX)) throw Napi::RangeError::New(env, std::string(what) + ": more than 2^31-1 elements; split the buffer");
  b.count = int(n);
  switch (ta.TypedArrayType()) {
    case napi_float32_array: b.type = MPI_FLOAT; break;
    case napi_float64_array: b.type = MPI_DOUBLE; break;
    case napi_int32_array: b.type = MPI_INT; break;
    case napi_uint8_array: b.type = MPI_BYTE; break;
    default: throw Napi::TypeError::New(env, std::string(what) + ": expected a Float32Array, Float64Array, Int32Array or Uint8Array");
  }
  return b;
}

void RequireStarted(Napi::Env env, const char* what) {
  Comm& c = C();
  if (!c.started) throw Napi::Error::New(env, std::string("mpi ") + what + ": call init() first");
  if (c.finalized) throw Napi::Error::New(env, std::string("mpi ") + what + ": MPI is already finalized");
}

double TimeoutArg(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : 0;
}

// Pending allreduces by id, waited for from JS.
std::unordered_map<uint32_t, std::shared_ptr<Job>>& Pending() {
  static auto* m = new std::unordered_map<uint32_t, std::shared_ptr<Job>>();
  return *m;
}
uint32_t nextId = 1;

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Comm& c = C();
  if (c.finalized) throw Napi::Error::New(env, "mpi init: MPI was finalized; it cannot start again in this process");
  if (!c.started) {
    // Open MPI loads its components as plugins that need libmpi's symbols: a libmpi loaded
    // RTLD_LOCAL as a dependency of this addon hides them. Promote it to global first.
    for (const char* lib : {"libmpi.so.40", "libmpi.so"}) {
      if (dlopen(lib, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) break;
    }
    c.thread = std::thread(Loop);
    c.thread.detach();
    c.started = true;
    auto j = std::make_shared<Job>();
    j->kind = Kind::Init;
    Enqueue(j);
    Wait(env, *j, TimeoutArg(info, 0));
  }
  auto o = Napi::Object::New(env);
  o.Set("rank", c.rank);
  o.Set("size", c.size);
  o.Set("threadLevel", c.provided);
  o.Set("version", c.version);
  return o;
}

Napi::Value AllreduceStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireStarted(env, "allreduce");
  Buffer b = TypedArrayArg(env, info[0], "mpi allreduce");
  std::string op = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "sum";
  auto j = std::make_shared<Job>();
  j->kind = Kind::Allreduce;
  j->data = b.data;
  j->count = b.count;
  j->type = b.type;
  if (op == "sum") j->op = MPI_SUM;
  else if (op == "max") j->op = MPI_MAX;
  else if (op == "min") j->op = MPI_MIN;
  else throw Napi::Error::New(env, "mpi allreduce: op must be sum, max or min, got " + op);
  j->keep = Napi::Persistent(info[0].As<Napi::Object>());
  uint32_t id = nextId++;
  Pending()[id] = j;
  Enqueue(j);
  return Napi::Number::New(env, id);
}

// wait(id, timeoutMs) -> { seconds, queued }: the time the allreduce took inside MPI and how long it
// waited in the queue behind earlier ones.
Napi::Value AllreduceWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  auto it = Pending().find(id);
  if (it == Pending().end()) throw Napi::Error::New(env, "mpi wait: unknown or already waited-for allreduce " + std::to_string(id));
  auto j = it->second;
  Wait(env, *j, TimeoutArg(info, 1));
  Pending().erase(it);
  j->keep.Reset();
  auto o = Napi::Object::New(env);
  o.Set("seconds", j->seconds);
  o.Set("queued", j->queued);
  return o;
}

Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireStarted(env, "broadcast");
  Buffer b = TypedArrayArg(env, info[0], "mpi broadcast");
  auto j = std::make_shared<Job>();
  j->kind = Kind::Broadcast;
  j->data = b.data;
  j->count = b.count;
  j->type = b.type;
  j->root = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
  if (j->root < 0 || j->root >= C().size) throw Napi::RangeError::New(env, "mpi broadcast: root " + std::to_string(j->root) + " is not a rank");
  Enqueue(j);
  Wait(env, *j, TimeoutArg(info, 2));
  return env.Undefined();
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireStarted(env, "barrier");
  auto j = std::make_shared<Job>();
  j->kind = Kind::Barrier;
  Enqueue(j);
  Wait(env, *j, TimeoutArg(info, 0));
  return env.Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Comm& c = C();
  if (!c.started || c.finalized) return env.Undefined();
  if (!Pending().empty()) throw Napi::Error::New(env, "mpi finalize: wait for every started allreduce first");
  auto j = std::make_shared<Job>();
  j->kind = Kind::Finalize;
  Enqueue(j);
  Wait(env, *j, TimeoutArg(info, 0));
  c.finalized = true;
  return env.Undefined();
}

// Ends every rank: the launcher (mpirun) kills the others. Called after a fatal error on this
// rank, possibly while the communication thread is blocked inside a collective.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  fflush(stdout);
  fflush(stderr);
  if (C().started && !C().finalized) MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);
  return info.Env().Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Comm& c = C();
  std::lock_guard<std::mutex> lk(c.mu);
  auto o = Napi::Object::New(env);
  o.Set("allreduceSeconds", c.busySeconds);
  o.Set("bytesReduced", c.bytesReduced);
  return o;
}

Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("allreduceStart", Napi::Function::New(env, AllreduceStart));
  exports.Set("allreduceWait", Napi::Function::New(env, AllreduceWait));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("stats", Napi::Function::New(env, Stats));
  return exports;
}

}  // namespace

NODE_API_MODULE(residual_mpi, InitAddon)
