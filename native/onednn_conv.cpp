// Convolution forward, input gradient and weight gradient on oneDNN, for the `onednn` feature.
//
// Tensors cross this boundary as plain NCHW / OIHW f32 buffers owned by the caller. oneDNN picks
// its own (blocked) layouts for the computation (`format_tag::any`), and reorders convert at the
// edges: the blocked kernels are several times faster than any plain layout on AVX2/AVX-512.
// Errors never cross as exceptions: each entry point returns 0 or -1 and leaves a message that
// `mmix_onednn_last_error` returns.

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace {

using dnnl::algorithm;
using dnnl::convolution_backward_data;
using dnnl::convolution_backward_weights;
using dnnl::convolution_forward;
using dnnl::engine;
using dnnl::memory;
using dnnl::prop_kind;
using dnnl::reorder;
using dnnl::stream;
using tag = memory::format_tag;
using dt = memory::data_type;

thread_local std::string last_error;

engine &cpu_engine() {
  static engine instance(engine::kind::cpu, 0);
  return instance;
}

struct Geometry {
  memory::dims src, weights, dst, strides, padding_begin, padding_end;
};

}  // namespace

extern "C" {

// Mirrors `ConvShape` in src/onednn/ffi.rs.
struct MmixConvShape {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t out_height, out_width;
  int64_t stride_height, stride_width;
  int64_t pad_top, pad_left, pad_bottom, pad_right;
};

}

namespace {

Geometry geometry(const MmixConvShape &s) {
  return Geometry{
      {s.batch, s.in_channels, s.in_height, s.in_width},
      {s.out_channels, s.in_channels, s.kernel_height, s.kernel_width},
      {s.batch, s.out_channels, s.out_height, s.out_width},
      {s.stride_height, s.stride_width},
      {s.pad_top, s.pad_left},
      {s.pad_bottom, s.pad_right},
  };
}

memory::desc any_desc(const memory::dims &dims) { return memory::desc(dims, dt::f32, tag::any); }

// Each execution brings its own scratchpad, so one primitive can run on several threads at
// once (with the library's scratchpad, concurrent runs of a primitive share one buffer).
dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

memory scratchpad(const dnnl::primitive_desc_base &pd) {
  return memory(pd.scratchpad_desc(), cpu_engine());
}

// The primitives of one convolution shape, made once: creating a primitive descriptor means
// asking every implementation whether it applies, which costs more than small convolutions.
struct Plan {
  Geometry g;
  convolution_forward::primitive_desc forward_pd;
  convolution_forward forward;
  convolution_backward_data::primitive_desc data_pd;
  convolution_backward_data backward_data;
  convolution_backward_weights::primitive_desc weights_pd;
  convolution_backward_weights backward_weights;

  explicit Plan(const Geometry &geometry) : g(geometry) {
    forward_pd = convolution_forward::primitive_desc(
        convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                  any_desc(g.src), any_desc(g.weights), any_desc(g.dst),
                                  g.strides, g.padding_begin, g.padding_end),
        user_scratchpad(), cpu_engine());
    forward = convolution_forward(forward_pd);
    data_pd = convolution_backward_data::primitive_desc(
        convolution_backward_data::desc(algorithm::convolution_direct, any_desc(g.src),
                                        any_desc(g.weights), any_desc(g.dst), g.strides,
                                        g.padding_begin, g.padding_end),
        user_scratchpad(), cpu_engine(), forward_pd);
    backward_data = convolution_backward_data(data_pd);
    weights_pd = convolution_backward_weights::primitive_desc(
        convolution_backward_weights::desc(algorithm::convolution_direct, any_desc(g.src),
                                           any_desc(g.weights), any_desc(g.dst), g.strides,
                                           g.padding_begin, g.padding_end),
        user_scratchpad(), cpu_engine(), forward_pd);
    backward_weights = convolution_backward_weights(weights_pd);
  }
};

using PlanKey = std::array<int64_t, sizeof(MmixConvShape) / sizeof(int64_t)>;

const Plan &plan_for(const MmixConvShape &shape) {
  static std::mutex lock;
  static std::map<PlanKey, std::unique_ptr<Plan>> plans;
  PlanKey key;
  std::memcpy(key.data(), &shape, sizeof shape);
  std::lock_guard<std::mutex> guard(lock);
  auto &plan = plans[key];
  if (!plan) plan.reset(new Plan(geometry(shape)));
  return *plan;
}

// A caller's plain buffer, reordered into `wanted` if oneDNN chose another layout.
memory as_input(stream &s, const memory::desc &wanted, const memory::dims &dims, tag plain,
                const float *data) {
  memory user(memory::desc(dims, dt::f32, plain), cpu_engine(), const_cast<float *>(data));
  if (wanted == user.get_desc()) return user;
  memory converted(wanted, cpu_engine());
  reorder(user, converted).execute(s, user, converted);
  return converted;
}

// Where oneDNN writes an output, and how it gets to the caller's plain buffer afterwards.
struct Output {
  memory user, computed;
  Output(const memory::desc &wanted, const memory::dims &dims, tag plain, float *data)
      : user(memory::desc(dims, dt::f32, plain), cpu_engine(), data),
        computed(wanted == user.get_desc() ? user : memory(wanted, cpu_engine())) {}
  void finish(stream &s) {
    if (computed.get() != user.get()) reorder(computed, user).execute(s, computed, user);
  }
};

// Runs `primitive` on two inputs into `out` with a scratchpad of its own, then moves the result
// to the caller's buffer.
using Argument = std::pair<int, memory>;
void execute(stream &s, const dnnl::primitive &primitive, const dnnl::primitive_desc_base &pd,
             const Argument &first, const Argument &second, int out_argument, Output &out) {
  primitive.execute(s, {{first.first, first.second},
                        {second.first, second.second},
                        {out_argument, out.computed},
                        {DNNL_ARG_SCRATCHPAD, scratchpad(pd)}});
  out.finish(s);
}

template <typename F>
int guarded(F body) {
  try {
    body();
    return 0;
  } catch (const dnnl::error &e) {
    last_error = std::string("oneDNN: ") + e.what() + " (status " + std::to_string(e.status) + ")";
  } catch (const std::exception &e) {
    last_error = std::string("oneDNN: ") + e.what();
  } catch (...) {
    last_error = "oneDNN: unknown failure";
  }
  return -1;
}

}  // namespace

extern "C" {

const char *mmix_onednn_last_error() { return last_error.c_str(); }

int mmix_onednn_conv2d_forward(const MmixConvShape *shape, const float *src, const float *weights,
                               float *dst) {
  return guarded([&] {
    const Plan &plan = plan_for(*shape);
    const Geometry &g = plan.g;
    stream s(cpu_engine());
    memory src_mem = as_input(s, plan.forward_pd.src_desc(), g.src, tag::nchw, src);
    memory weights_mem = as_input(s, plan.forward_pd.weights_desc(), g.weights, tag::oihw, weights);
    Output out(plan.forward_pd.dst_desc(), g.dst, tag::nchw, dst);
    execute(s, plan.forward, plan.forward_pd, {DNNL_ARG_SRC, src_mem},
            {DNNL_ARG_WEIGHTS, weights_mem}, DNNL_ARG_DST, out);
    s.wait();
  });
}

// Both gradients of one convolution; a null output pointer skips that gradient. The output
// gradient is reordered once for both when they want the same layout.
int mmix_onednn_conv2d_backward(const MmixConvShape *shape, const float *src,
                                const float *weights, const float *diff_dst, float *diff_src,
                                float *diff_weights) {
  return guarded([&] {
    const Plan &plan = plan_for(*shape);
    const Geometry &g = plan.g;
    stream s(cpu_engine());
    memory diff_dst_for_data;
    if (diff_src != nullptr) {
      diff_dst_for_data = as_input(s, plan.data_pd.diff_dst_desc(), g.dst, tag::nchw, diff_dst);
      memory weights_mem = as_input(s, plan.data_pd.weights_desc(), g.weights, tag::oihw, weights);
      Output out(plan.data_pd.diff_src_desc(), g.src, tag::nchw, diff_src);
      execute(s, plan.backward_data, plan.data_pd, {DNNL_ARG_DIFF_DST, diff_dst_for_data},
              {DNNL_ARG_WEIGHTS, weights_mem}, DNNL_ARG_DIFF_SRC, out);
    }
    if (diff_weights != nullptr) {
      memory diff_dst_mem =
          diff_src != nullptr && diff_dst_for_data.get_desc() == plan.weights_pd.diff_dst_desc()
              ? diff_dst_for_data
              : as_input(s, plan.weights_pd.diff_dst_desc(), g.dst, tag::nchw, diff_dst);
      memory src_mem = as_input(s, plan.weights_pd.src_desc(), g.src, tag::nchw, src);
      Output out(plan.weights_pd.diff_weights_desc(), g.weights, tag::oihw, diff_weights);
      execute(s, plan.backward_weights, plan.weights_pd, {DNNL_ARG_SRC, src_mem},
              {DNNL_ARG_DIFF_DST, diff_dst_mem}, DNNL_ARG_DIFF_WEIGHTS, out);
    }
    s.wait();
  });
}

}  // extern "C"
