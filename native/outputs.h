// How compute code makes the tensors it returns without knowing about JS objects: the Node-API
// layer passes a JsOutputs (napi_args.h), which wraps each new tensor in a JS object and hands the
// objects back once the op is done.
#pragma once

#include "tensor.h"

namespace residual {

class Outputs {
 public:
  virtual Tensor* New(const dims& shape, Layout layout, const memory::desc& md) = 0;
  // NHWC for rank 4, plain otherwise.
  Tensor* Canon(const dims& shape) {
    Layout l;
    memory::desc md = CanonMd(shape, &l);
    return New(shape, l, md);
  }
  Tensor* Plain(const dims& shape) { return New(shape, Layout::Plain, PlainMd(shape)); }

 protected:
  ~Outputs() = default;
};

// Which gradients a backward op computes, and what it returns (null where not asked for).
struct GradsWanted {
  bool input = false, weight = false, bias = false;
};
struct Grads {
  Tensor* dx = nullptr;
  Tensor* dw = nullptr;
  Tensor* db = nullptr;
};

}  // namespace residual
