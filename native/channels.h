// Channel plumbing (concat/split along C, the CIFAR option-A shortcut): the compute side
// (channels.cc); the Node-API side is channels_binding.cc.
#pragma once

#include <vector>

#include "common.h"

namespace residual {

Tensor* ConcatChannels(const std::vector<Tensor*>& xs, Outputs& outs);
std::vector<Tensor*> SplitChannels(Tensor* x, const dims& sizes, Outputs& outs);
// The input subsampled by `stride`, zero channels either side up to `out_channels`.
Tensor* ShortcutA(Tensor* x, int64_t out_channels, int64_t stride, Outputs& outs);
Tensor* ShortcutABackward(Tensor* dy, const dims& input_shape, int64_t stride, Outputs& outs);

}  // namespace residual
