// The plan's int8 convolution (post-training static quantization): weights quantized per output
// channel, u8/s8 activations with the calibrated scales their producers carry, the residual sum read
// in the shortcut's own int8 type and scale. The rest of the plan is in plan.cc.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "allocator.h"
#include "plan_impl.h"

namespace residual {

using dnnl::algorithm;
using dnnl::prop_kind;

void Plan::QuantizeWeights(OpDesc& op) {
  if (!op.wscale.empty()) return;
  const size_t per = op.weight.size() / static_cast<size_t>(op.out.c);
  op.wscale.assign(op.out.c, 1.f);
  op.qweight.resize(op.weight.size());
  for (int64_t o = 0; o < op.out.c; ++o) {
    const float* w = op.weight.data() + o * per;
    float m = 0;
    for (size_t i = 0; i < per; ++i) m = std::max(m, std::fabs(w[i]));
    const float sc = m > 0 ? m / 127.f : 1.f;
    op.wscale[o] = sc;
    for (size_t i = 0; i < per; ++i) op.qweight[o * per + i] = static_cast<int8_t>(std::nearbyint(std::clamp(w[i] / sc, -127.f, 127.f)));
  }
  op.weight.clear();
  op.weight.shrink_to_fit();
}

void Plan::AddConvInt8(Program& p, OpDesc& op, int64_t n) {
  memory have = val_[op.src];
  if (!have) throw OpError("buffer " + std::to_string(op.src) + " is read before anything writes it");
  const dt sdt = IsInt8(DtOf(have)) ? DtOf(have) : signed_[op.src] ? dt::s8 : dt::u8;
  const float ss = scale_[op.src], ds = op.qscale;
  if (!(ss > 0) || !(ds > 0)) throw OpError(op.name + ": no calibrated int8 scale for its input or output (recalibrate the plan)");
  const dt ddt = op.qsigned ? dt::s8 : dt::u8;
  QuantizeWeights(op);
  std::vector<float> oscale(op.out.c);
  for (int64_t o = 0; o < op.out.c; ++o) oscale[o] = ss * op.wscale[o] / ds;
  if (!op.bia)  // Bias() stores it once: the scales are the same for every batch size
    for (int64_t o = 0; o < op.out.c; ++o) op.bias[o] /= ss * op.wscale[o];
  dt sum_dt = ddt;
  dnnl::post_ops po;
  if (op.sum) {
    memory sc = val_[op.dst];
    if (!sc) throw OpError(op.name + ": its shortcut is not computed before it");
    sum_dt = IsInt8(DtOf(sc)) ? DtOf(sc) : signed_[op.dst] ? dt::s8 : dt::u8;
    if (!(scale_[op.dst] > 0)) throw OpError(op.name + ": its shortcut has no calibrated int8 scale (recalibrate the plan)");
    po.append_sum(scale_[op.dst] / ds, sum_dt);
  }
  if (op.relu) po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr = UserScratchAttr();
  attr.set_post_ops(po);
  attr.set_output_scales(1 << 1, oscale);
  const bool grouped = op.groups > 1;
  dims wd = grouped ? dims{op.groups, op.out.c / op.groups, op.in.c / op.groups, op.kh, op.kw}
                    : dims{op.out.c, op.in.c, op.kh, op.kw};
  auto make = [&](tag f) {
    dnnl::convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, Md(op.in, n, sdt, f),
                                      memory::desc(wd, dt::s8, tag::any), memory::desc({op.out.c}, dt::f32, tag::x),
                                      Md(op.out, n, ddt, f), {op.sh, op.sw}, {op.dh - 1, op.dw - 1}, {op.ph, op.pw}, {op.ph, op.pw});
    return dnnl::convolution_forward::primitive_desc(d, attr, Eng());
  };
  dnnl::convolution_forward::primitive_desc pd;
  try {
    pd = make(tag::nhwc);
  } catch (const dnnl::error&) {
  }
  if (!pd || std::strncmp(pd.impl_info_str(), "ref", 3) == 0) {
    auto alt = make(tag::any);
    if (!pd || std::strncmp(alt.impl_info_str(), "ref", 3) != 0) pd = alt;
  }
  Impl(op.name, n, pd.impl_info_str());
  auto prim = std::make_shared<Prim>(MakePrim<decltype(pd), dnnl::convolution_forward>(pd));
  memory wei = Ready(op, memory::desc(wd, dt::s8, grouped ? tag::goihw : tag::oihw), pd.weights_desc());
  memory bias = Bias(op, op.out.c);
  memory src = Need(p, op.src, pd.src_desc(), op.name + ".src", n);
  memory dst;
  if (op.sum) {
    // The shortcut in the dst's layout and its own int8 type; the conv then writes over it.
    dnnl_memory_desc_t c = pd.dst_desc().data;
    c.data_type = memory::convert_to_c(sum_dt);
    memory sc = Need(p, op.dst, memory::desc(c), op.name + ".shortcut", n);
    dst = memory(pd.dst_desc(), Eng(), sc.get_data_handle());
    val_[op.dst] = dst;
    copies_[op.dst].clear();
  } else {
    dst = Out(op.dst, pd.dst_desc());
  }
  scale_[op.dst] = ds;
  signed_[op.dst] = op.qsigned;
  p.steps.push_back([=]() {
    prim->Exec({{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  });
}

}  // namespace residual
