// Would Winograd make our narrow-net training faster? oneDNN 2.6's f32 Winograd (jit_wino_4x3, blocked
// layouts chosen by oneDNN) against the direct convolutions our training step uses (NHWC), for the
// 3x3 stride-1 shapes of ResNet-20 on Fashion-MNIST at batch 128: forward, backward-data and
// backward-weights, median ms of 30 runs each, reorders not counted (favouring Winograd). Issue #17.
//   g++ -O2 -std=c++17 bench/onednn/winograd_train_convs.cc -o /tmp/winograd_train_convs -ldnnl -fopenmp
//   OMP_NUM_THREADS=2 /tmp/winograd_train_convs      # one JSON line per shape and algorithm
#include <dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <vector>
#include <algorithm>
#include <unordered_map>
using namespace dnnl;
using tag = memory::format_tag; using dt = memory::data_type;
static engine eng(engine::kind::cpu, 0); static stream strm(eng);
double timeit(primitive p, std::unordered_map<int, memory> args, int reps) {
  for (int i = 0; i < 3; i++) p.execute(strm, args); strm.wait();
  std::vector<double> t;
  for (int i = 0; i < reps; i++) { auto a = std::chrono::steady_clock::now(); p.execute(strm, args); strm.wait();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count()); }
  std::sort(t.begin(), t.end()); return t[t.size() / 2];
}
int main() {
  int shapes[][2] = {{16, 28}, {32, 14}, {64, 7}};
  for (auto& sh : shapes) {
    int c = sh[0], h = sh[1], n = 128;
    memory::dims src{n, c, h, h}, wei{c, c, 3, 3}, dst{n, c, h, h}, st{1, 1}, pad{1, 1};
    for (auto alg : {algorithm::convolution_direct, algorithm::convolution_winograd}) {
      bool w = alg == algorithm::convolution_winograd;
      memory::desc s_md(src, dt::f32, w ? tag::any : tag::nhwc), d_md(dst, dt::f32, w ? tag::any : tag::nhwc), w_md(wei, dt::f32, tag::any);
      try {
        convolution_forward::primitive_desc fpd({prop_kind::forward_training, alg, s_md, w_md, memory::desc(), d_md, st, pad, pad}, eng);
        memory S(fpd.src_desc(), eng), W(fpd.weights_desc(), eng), D(fpd.dst_desc(), eng);
        std::fill((float*)S.get_data_handle(), (float*)S.get_data_handle() + S.get_desc().get_size() / 4, 0.5f);
        std::fill((float*)W.get_data_handle(), (float*)W.get_data_handle() + W.get_desc().get_size() / 4, 0.01f);
        double tf = timeit(convolution_forward(fpd), {{DNNL_ARG_SRC, S}, {DNNL_ARG_WEIGHTS, W}, {DNNL_ARG_DST, D}}, 30);
        convolution_backward_data::primitive_desc bpd({alg, s_md, w_md, d_md, st, pad, pad}, eng, fpd);
        memory dS(bpd.diff_src_desc(), eng), dD(bpd.diff_dst_desc(), eng), W2(bpd.weights_desc(), eng);
        std::fill((float*)dD.get_data_handle(), (float*)dD.get_data_handle() + dD.get_desc().get_size() / 4, 0.1f);
        double tb = timeit(convolution_backward_data(bpd), {{DNNL_ARG_DIFF_SRC, dS}, {DNNL_ARG_WEIGHTS, W2}, {DNNL_ARG_DIFF_DST, dD}}, 30);
        convolution_backward_weights::primitive_desc wpd({alg, s_md, w_md, d_md, st, pad, pad}, eng, fpd);
        memory S3(wpd.src_desc(), eng), dW(wpd.diff_weights_desc(), eng), dD3(wpd.diff_dst_desc(), eng);
        std::fill((float*)S3.get_data_handle(), (float*)S3.get_data_handle() + S3.get_desc().get_size() / 4, 0.5f);
        std::fill((float*)dD3.get_data_handle(), (float*)dD3.get_data_handle() + dD3.get_desc().get_size() / 4, 0.1f);
        double tw = timeit(convolution_backward_weights(wpd), {{DNNL_ARG_SRC, S3}, {DNNL_ARG_DIFF_WEIGHTS, dW}, {DNNL_ARG_DIFF_DST, dD3}}, 30);
        double gflop = 2.0 * n * c * c * 9 * h * h / 1e9;  // per pass, the direct convolution's count
        printf("{\"channels\": %d, \"size\": %d, \"batch\": %d, \"algorithm\": \"%s\", \"fwd_ms\": %.3f, \"bwd_data_ms\": %.3f, "
               "\"bwd_weights_ms\": %.3f, \"direct_equivalent_gflops\": %.0f, \"impl\": \"%s\"}\n",
               c, h, n, w ? "winograd" : "direct", tf, tb, tw, 3 * gflop / (tf + tb + tw) * 1e3, fpd.impl_info_str());
      } catch (dnnl::error& e) { printf("{\"channels\": %d, \"size\": %d, \"algorithm\": \"%s\", \"error\": \"%s\"}\n", c, h, w ? "winograd" : "direct", e.what()); }
    }
  }
}
