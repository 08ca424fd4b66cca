// The plan's narrow grouped convs (3x3, 4 or 8 channels per group: ResNeXt stages 1-2) on our own
// kernel (grouped_conv.cc), on the plan's nChw16c or NHWC buffers. The rest of the plan is in plan.cc.

#include <memory>

#include "allocator.h"
#include "plan_impl.h"

namespace residual {

bool Plan::Narrow(const OpDesc& op) const {
  return layout != ActLayout::Any && want_grouped != "onednn" &&
         GroupedConv3x3::Covers(op.in.c, op.out.c, op.groups, op.kh, op.kw, op.sh, op.sw, op.ph, op.pw, op.dh, op.dw);
}

void Plan::AddNarrowGroupedConv(Program& p, OpDesc& op, int64_t n) {
  if (!op.narrow) {
    op.narrow = std::make_shared<GroupedConv3x3>(op.weight.data(), op.bias.data(), op.out.c, op.in.c / op.groups, op.sh, op.relu, op.sum);
    op.weight.clear();
    op.weight.shrink_to_fit();
    op.bias.clear();
    op.bias.shrink_to_fit();
    bytes += op.narrow->Bytes();
    ReportExternal(static_cast<int64_t>(op.narrow->Bytes()));
  }
  const bool blocked = layout == ActLayout::Blocked;
  const tag f = blocked ? tag::nChw16c : tag::nhwc;
  memory src = Need(p, op.src, Md(op.in, n, act, f), op.name + ".src", n);
  memory dst;
  if (op.sum) {
    dst = Need(p, op.dst, Md(op.out, n, act, f), op.name + ".shortcut", n);
    val_[op.dst] = dst;
    copies_[op.dst].clear();
  } else {
    dst = Out(op.dst, Md(op.out, n, act, f));
  }
  Impl(op.name, n, op.narrow->Name());
  auto strides = [blocked](const Shape3& sh) {
    return blocked ? BlockStrides::Nchw16c(sh.c, sh.h, sh.w) : BlockStrides::Nhwc(sh.c, sh.h, sh.w);
  };
  const BlockStrides s = strides(op.in), d = strides(op.out);
  const Shape3 in = op.in, out = op.out;
  const bool bf16 = act == dt::bf16;
  std::shared_ptr<const GroupedConv3x3> kernel = op.narrow;
  p.steps.push_back([=]() { kernel->Run(src.get_data_handle(), s, in.h, in.w, dst.get_data_handle(), d, out.h, out.w, n, bf16); });
}

}  // namespace residual
