// What every compute file includes: the engine, the allocator, the tensor class and the way to make
// result tensors. No argument parsing: each op family's Node-API layer is its *_binding.cc.
#pragma once

#include "allocator.h"
#include "engine.h"
#include "outputs.h"
#include "tensor.h"
