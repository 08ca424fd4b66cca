// Would a blocked layout make our narrow-net training convolutions faster? oneDNN 2.6's direct f32
// convolutions in NHWC (what our training step keeps activations in) against nChw16c (oneDNN's own
// blocked layout, what `any` picks here), for the 3x3 stride-1 shapes of ResNet-20 on Fashion-MNIST
// at batch 128: forward, backward-data, backward-weights, median ms of 30 runs each, with the
// implementation oneDNN picks first. (Walking the others with next_impl() crashed oneDNN 2.6 here.) Issue #17.
//   g++ -O2 -std=c++17 bench/onednn/layout_train_convs.cc -o /tmp/layout_train_convs -ldnnl -fopenmp
//   OMP_NUM_THREADS=2 /tmp/layout_train_convs      # one JSON line per shape, layout and implementation
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unordered_map>
#include <vector>
using namespace dnnl;
using tag = memory::format_tag; using dt = memory::data_type;
static engine eng(engine::kind::cpu, 0); static stream strm(eng);

static double timeit(primitive p, std::unordered_map<int, memory> args, int reps) {
  for (int i = 0; i < 3; i++) p.execute(strm, args);
  strm.wait();
  std::vector<double> t;
  for (int i = 0; i < reps; i++) { auto a = std::chrono::steady_clock::now(); p.execute(strm, args); strm.wait();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count()); }
  std::sort(t.begin(), t.end()); return t[t.size() / 2];
}
static void fill(memory& m, float v) { std::fill((float*)m.get_data_handle(), (float*)m.get_data_handle() + m.get_desc().get_size() / 4, v); }

int main() {
  int shapes[][2] = {{16, 28}, {32, 14}, {64, 7}};
  for (auto& sh : shapes) {
    int c = sh[0], h = sh[1], n = 128;
    double gflop = 2.0 * n * c * c * 9 * h * h / 1e9;
    memory::dims src{n, c, h, h}, wei{c, c, 3, 3}, dst{n, c, h, h}, st{1, 1}, pad{1, 1};
    for (auto layout : {tag::nhwc, tag::nChw16c}) {
      const char* name = layout == tag::nhwc ? "nhwc" : "nChw16c";
      memory::desc s_md(src, dt::f32, layout), d_md(dst, dt::f32, layout), w_md(wei, dt::f32, tag::any);
      auto alg = algorithm::convolution_direct;
      auto report = [&](const char* pass, double ms, const char* impl) {
        printf("{\"channels\": %d, \"size\": %d, \"batch\": %d, \"layout\": \"%s\", \"pass\": \"%s\", \"ms\": %.3f, \"gflops\": %.0f, \"impl\": \"%s\"}\n",
               c, h, n, name, pass, ms, gflop / ms * 1e3, impl);
      };
      convolution_forward::primitive_desc fpd({prop_kind::forward_training, alg, s_md, w_md, memory::desc(), d_md, st, pad, pad}, eng);
      {
        memory S(fpd.src_desc(), eng), W(fpd.weights_desc(), eng), D(fpd.dst_desc(), eng); fill(S, .5f); fill(W, .01f);
        report("fwd", timeit(convolution_forward(fpd), {{DNNL_ARG_SRC, S}, {DNNL_ARG_WEIGHTS, W}, {DNNL_ARG_DST, D}}, 30), fpd.impl_info_str());
      }
      convolution_backward_data::primitive_desc bpd({alg, s_md, w_md, d_md, st, pad, pad}, eng, fpd);
      {
        memory dS(bpd.diff_src_desc(), eng), dD(bpd.diff_dst_desc(), eng), W(bpd.weights_desc(), eng); fill(dD, .1f); fill(W, .01f);
        report("bwd_data", timeit(convolution_backward_data(bpd), {{DNNL_ARG_DIFF_SRC, dS}, {DNNL_ARG_WEIGHTS, W}, {DNNL_ARG_DIFF_DST, dD}}, 30), bpd.impl_info_str());
      }
      convolution_backward_weights::primitive_desc wpd({alg, s_md, w_md, d_md, st, pad, pad}, eng, fpd);
      {
        memory S(wpd.src_desc(), eng), dW(wpd.diff_weights_desc(), eng), dD(wpd.diff_dst_desc(), eng); fill(S, .5f); fill(dD, .1f);
        report("bwd_weights", timeit(convolution_backward_weights(wpd), {{DNNL_ARG_SRC, S}, {DNNL_ARG_DIFF_WEIGHTS, dW}, {DNNL_ARG_DIFF_DST, dD}}, 30), wpd.impl_info_str());
      }
    }
  }
}
