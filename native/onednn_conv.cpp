// Convolution forward, input gradient and weight gradient on oneDNN, for the `onednn` feature.
//
// Tensors cross this boundary as f32 buffers owned by the caller: weights OIHW, activations
// NCHW or channel-blocked (`nChw8c` / `nChw16c`, as the shape says). oneDNN picks its own
// layouts for the computation (`format_tag::any`), and reorders convert at the edges where the
// caller's layout differs: the blocked kernels are several times faster than any plain layout
// on AVX2/AVX-512, and a caller that keeps its activations blocked skips the reorders.
// The forward pass can hand back its input in the blocked layout (a `MmixSavedSource`), so the
// weight gradient does not convert that input a second time.
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
#include <optional>
#include <stdexcept>
#include <unordered_map>
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
  int64_t in_block, out_block;
  // The data type the convolution reads its input, weights and output gradient in: f32, or
  // bf16 (converted from the caller's f32); it accumulates and writes in f32 either way.
  dt operands;
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
  // Channels per block of the caller's input and output: 1 (NCHW), 8 or 16.
  int64_t in_block, out_block;
  // 1: input, weights and output gradient in bf16 (accumulation and results in f32); 0: f32.
  int64_t bf16;
};

// Mirrors `Buffers` in src/kernels/onednn/ffi.rs: the lengths, in floats, of the caller's
// input (and input gradient), weights (and weight gradient) and output (and its gradient).
struct MmixBuffers {
  int64_t src, weights, dst;
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
      s.in_block,
      s.out_block,
      s.bf16 != 0 ? dt::bf16 : dt::f32,
  };
}

memory::desc any_desc(const memory::dims &dims, dt type = dt::f32) {
  return memory::desc(dims, type, tag::any);
}

// Each execution brings its own scratchpad, so one primitive can run on several threads at
// once (with the library's scratchpad, concurrent runs of a primitive share one buffer).
dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// Runs `primitive` on `args`, with a scratchpad of its own when it needs one.
void run(stream &s, const dnnl::primitive &primitive, const dnnl::primitive_desc_base &pd,
         std::unordered_map<int, memory> args) {
  if (pd.scratchpad_desc().get_size() != 0) {
    args.insert({DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), cpu_engine())});
  }
  primitive.execute(s, args);
}

// A move from one layout to another, made once per plan: creating a reorder asks every
// implementation whether it applies, as creating any primitive does.
class Conversion {
 public:
  Conversion(const memory::desc &from, const memory::desc &to) : from_(from), to_(to) {
    if (from != to) {
      pd_ = reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to, user_scratchpad());
      step_ = reorder(*pd_);
    }
  }

  const memory::desc &from() const { return from_; }
  const memory::desc &to() const { return to_; }

  // `source` (in `from`'s layout) in `to`'s: itself when the layouts agree, else a new buffer.
  memory apply(stream &s, const memory &source) const {
    if (!step_) return source;
    memory converted(to_, cpu_engine());
    run(s, *step_, *pd_, {{DNNL_ARG_FROM, source}, {DNNL_ARG_TO, converted}});
    return converted;
  }

  // `source` written into `target`, unless they are one buffer already.
  void apply_into(stream &s, const memory &source, const memory &target) const {
    if (step_) run(s, *step_, *pd_, {{DNNL_ARG_FROM, source}, {DNNL_ARG_TO, target}});
  }

 private:
  memory::desc from_, to_;
  std::optional<reorder::primitive_desc> pd_;
  std::optional<reorder> step_;
};

// A caller's plain buffer, in the layout `conversion` leads to.
memory input(stream &s, const Conversion &conversion, const float *data) {
  return conversion.apply(s, memory(conversion.from(), cpu_engine(), const_cast<float *>(data)));
}

// Where a primitive writes an output in `conversion`'s source layout, and how it gets to the
// caller's plain buffer afterwards (directly, when the layouts agree).
class Output {
 public:
  Output(const Conversion &conversion, float *data)
      : conversion_(conversion),
        user_(conversion.to(), cpu_engine(), data),
        computed_(conversion.from() == conversion.to() ? user_
                                                       : memory(conversion.from(), cpu_engine())) {}
  const memory &computed() const { return computed_; }
  void finish(stream &s) const { conversion_.apply_into(s, computed_, user_); }

 private:
  const Conversion &conversion_;
  memory user_, computed_;
};

// Runs `primitive` on `inputs` with its output argument `out_argument` in `out`, then moves
// that output to the caller's buffer.
void run_into(stream &s, const dnnl::primitive &primitive, const dnnl::primitive_desc_base &pd,
              std::unordered_map<int, memory> inputs, int out_argument, const Output &out) {
  inputs.insert({out_argument, out.computed()});
  run(s, primitive, pd, std::move(inputs));
  out.finish(s);
}

// The primitives of one convolution shape, and the conversions around them, made once:
// creating a primitive descriptor costs more than running small convolutions.
struct Plan {
  Geometry g;
  convolution_forward::primitive_desc forward_pd;
  convolution_forward forward;
  convolution_backward_data::primitive_desc data_pd;
  convolution_backward_data backward_data;
  convolution_backward_weights::primitive_desc weights_pd;
  convolution_backward_weights backward_weights;
  std::optional<Conversion> forward_src, forward_weights, forward_dst;
  std::optional<Conversion> data_diff_dst, data_weights, data_diff_src;
  std::optional<Conversion> weights_src, weights_diff_dst, weights_diff_weights;
  std::optional<Conversion> saved_to_user;

  explicit Plan(const Geometry &geometry) : g(geometry) {
    // Operands (read) in `g.operands`, results (written) in f32: with bf16 operands the
    // master weights, their gradient and every activation stay f32 outside the convolution.
    const memory::desc src_in = any_desc(g.src, g.operands), src_out = any_desc(g.src);
    const memory::desc weights_in = any_desc(g.weights, g.operands);
    const memory::desc weights_out = any_desc(g.weights);
    const memory::desc dst_in = any_desc(g.dst, g.operands), dst_out = any_desc(g.dst);
    const auto direct = algorithm::convolution_direct;
    const dnnl::primitive_attr attr = user_scratchpad();
    forward_pd = convolution_forward::primitive_desc(
        convolution_forward::desc(prop_kind::forward_training, direct, src_in, weights_in,
                                  dst_out, g.strides, g.padding_begin, g.padding_end),
        attr, cpu_engine());
    forward = convolution_forward(forward_pd);
    data_pd = convolution_backward_data::primitive_desc(
        convolution_backward_data::desc(direct, src_out, weights_in, dst_in, g.strides,
                                        g.padding_begin, g.padding_end),
        attr, cpu_engine(), forward_pd);
    backward_data = convolution_backward_data(data_pd);
    weights_pd = convolution_backward_weights::primitive_desc(
        convolution_backward_weights::desc(direct, src_in, weights_out, dst_in, g.strides,
                                           g.padding_begin, g.padding_end),
        attr, cpu_engine(), forward_pd);
    backward_weights = convolution_backward_weights(weights_pd);

    const memory::desc src = activations(g.src, g.in_block);
    const memory::desc dst = activations(g.dst, g.out_block);
    const memory::desc weights(g.weights, dt::f32, tag::oihw);
    forward_src.emplace(src, forward_pd.src_desc());
    forward_weights.emplace(weights, forward_pd.weights_desc());
    forward_dst.emplace(forward_pd.dst_desc(), dst);
    data_diff_dst.emplace(dst, data_pd.diff_dst_desc());
    data_weights.emplace(weights, data_pd.weights_desc());
    data_diff_src.emplace(data_pd.diff_src_desc(), src);
    weights_src.emplace(src, weights_pd.src_desc());
    weights_diff_dst.emplace(dst, weights_pd.diff_dst_desc());
    weights_diff_weights.emplace(weights_pd.diff_weights_desc(), weights);
    saved_to_user.emplace(weights_pd.src_desc(), src);
  }

  // Whether the forward pass's converted input is what the weight gradient wants.
  bool forward_source_serves_weights() const {
    return forward_pd.src_desc() != forward_src->from() &&
           forward_pd.src_desc() == weights_pd.src_desc();
  }

  // The caller's layout of an activation: NCHW, or in blocks of `block` channels.
  static memory::desc activations(const memory::dims &dims, int64_t block) {
    switch (block) {
      case 1: return memory::desc(dims, dt::f32, tag::nchw);
      case 8: return memory::desc(dims, dt::f32, tag::nChw8c);
      case 16: return memory::desc(dims, dt::f32, tag::nChw16c);
      default: throw std::invalid_argument("channel blocks of " + std::to_string(block));
    }
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

// Refuses a caller's buffer of `floats` floats that `desc` does not fit in: a channel count
// that is not a multiple of its block makes oneDNN pad it, and it would read or write past
// the end.
void check_fits(const memory::desc &desc, int64_t floats, const char *what) {
  const size_t needed = desc.get_size();
  if (floats < 0 || needed > static_cast<size_t>(floats) * sizeof(float)) {
    throw std::invalid_argument(std::string("the ") + what + " buffer holds " +
                                std::to_string(floats) + " floats; its layout needs " +
                                std::to_string(needed / sizeof(float)));
  }
}

template <typename F>
int guarded(F body) {
  try {
    body();
    return 0;
  } catch (const dnnl::error &e) {
    last_error = std::string("oneDNN: ") + e.what() + " (status " + std::to_string(e.status) + ")";
  } catch (const std::bad_alloc &) {
    last_error = "oneDNN: out of memory";
  } catch (const std::exception &e) {
    last_error = std::string("oneDNN: ") + e.what();
  } catch (...) {
    last_error = "oneDNN: unknown failure";
  }
  return -1;
}

}  // namespace

extern "C" {

// A forward pass's input in the layout of the weight gradient's primitive.
struct MmixSavedSource {
  memory source;
};

const char *mmix_onednn_last_error() { return last_error.c_str(); }

// Channels per block of the layout oneDNN computes a typical 3×3 convolution's activations
// in on this CPU: 16 (AVX-512), 8 (AVX2, SSE4.1), or 1 when it is neither blocked layout.
int64_t mmix_onednn_native_block() {
  int64_t block = 1;
  guarded([&] {
    const memory::dims src = {2, 32, 8, 8}, weights = {32, 32, 3, 3};
    const convolution_forward::primitive_desc pd(
        convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                  any_desc(src), any_desc(weights), any_desc(src), {1, 1},
                                  {1, 1}, {1, 1}),
        cpu_engine());
    for (int64_t candidate : {16, 8}) {
      if (pd.dst_desc() == Plan::activations(src, candidate)) block = candidate;
    }
  });
  return block;
}

// The instruction set oneDNN dispatches to on this CPU, as oneDNN names it.
const char *mmix_onednn_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
  }
}

// The implementation oneDNN picks for a typical 3x3 convolution's forward pass with `bf16`
// operands or f32 ones (e.g. "brg:avx512_core_amx", "jit:avx512_core"), or "" on failure.
const char *mmix_onednn_implementation(int64_t bf16) {
  static thread_local std::string name;
  name.clear();
  guarded([&] {
    const memory::dims src = {32, 64, 16, 16}, weights = {64, 64, 3, 3};
    const dt operands = bf16 != 0 ? dt::bf16 : dt::f32;
    const convolution_forward::primitive_desc pd(
        convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                  any_desc(src, operands), any_desc(weights, operands),
                                  any_desc(src), {1, 1}, {1, 1}, {1, 1}),
        cpu_engine());
    name = pd.impl_info_str();
  });
  return name.c_str();
}

void mmix_onednn_saved_source_free(MmixSavedSource *saved) { delete saved; }

// The forward pass. With a non-null `saved`, `*saved` receives the input in the weight
// gradient's layout, or null when that layout is the plain one (the caller keeps `src` then).
int mmix_onednn_conv2d_forward(const MmixConvShape *shape, const MmixBuffers *buffers,
                               const float *src, const float *weights, float *dst,
                               MmixSavedSource **saved) {
  if (saved != nullptr) *saved = nullptr;
  return guarded([&] {
    const Plan &plan = plan_for(*shape);
    check_fits(plan.forward_src->from(), buffers->src, "input");
    check_fits(plan.forward_weights->from(), buffers->weights, "weights");
    check_fits(plan.forward_dst->to(), buffers->dst, "output");
    stream s(cpu_engine());
    memory src_mem = input(s, *plan.forward_src, src);
    memory weights_mem = input(s, *plan.forward_weights, weights);
    run_into(s, plan.forward, plan.forward_pd,
             {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, weights_mem}}, DNNL_ARG_DST,
             Output(*plan.forward_dst, dst));
    s.wait();
    if (saved != nullptr && plan.forward_source_serves_weights()) {
      *saved = new MmixSavedSource{src_mem};
    }
  });
}

// A saved input back in the caller's layout, for a caller that has to compute without oneDNN.
int mmix_onednn_saved_source_to_user(const MmixConvShape *shape, const MmixBuffers *buffers,
                                     const MmixSavedSource *saved, float *src) {
  return guarded([&] {
    const Plan &plan = plan_for(*shape);
    const Conversion &conversion = *plan.saved_to_user;
    check_fits(conversion.to(), buffers->src, "input");
    if (saved->source.get_desc() != conversion.from()) {
      throw std::invalid_argument("a saved input of another convolution");
    }
    stream s(cpu_engine());
    conversion.apply_into(s, saved->source, memory(conversion.to(), cpu_engine(), src));
    s.wait();
  });
}

// Both gradients of one convolution; a null output pointer skips that gradient. The input
// comes as `saved` when the forward pass kept it, else as the plain `src`. The output
// gradient is converted once for both when they want the same layout.
int mmix_onednn_conv2d_backward(const MmixConvShape *shape, const MmixBuffers *buffers,
                                const float *src, const MmixSavedSource *saved,
                                const float *weights, const float *diff_dst, float *diff_src,
                                float *diff_weights) {
  return guarded([&] {
    const Plan &plan = plan_for(*shape);
    check_fits(plan.data_diff_dst->from(), buffers->dst, "output gradient");
    check_fits(plan.data_weights->from(), buffers->weights, "weights");
    check_fits(plan.data_diff_src->to(), buffers->src, "input gradient");
    check_fits(plan.weights_src->from(), buffers->src, "input");
    check_fits(plan.weights_diff_weights->to(), buffers->weights, "weight gradient");
    if (saved != nullptr && saved->source.get_desc() != plan.weights_pd.src_desc()) {
      throw std::invalid_argument("a saved input of another convolution");
    }
    stream s(cpu_engine());
    memory diff_dst_for_data;
    if (diff_src != nullptr) {
      diff_dst_for_data = input(s, *plan.data_diff_dst, diff_dst);
      memory weights_mem = input(s, *plan.data_weights, weights);
      run_into(s, plan.backward_data, plan.data_pd,
               {{DNNL_ARG_DIFF_DST, diff_dst_for_data}, {DNNL_ARG_WEIGHTS, weights_mem}},
               DNNL_ARG_DIFF_SRC, Output(*plan.data_diff_src, diff_src));
    }
    if (diff_weights != nullptr) {
      memory diff_dst_mem =
          diff_src != nullptr && plan.data_diff_dst->to() == plan.weights_diff_dst->to()
              ? diff_dst_for_data
              : input(s, *plan.weights_diff_dst, diff_dst);
      memory src_mem = saved != nullptr ? saved->source : input(s, *plan.weights_src, src);
      run_into(s, plan.backward_weights, plan.weights_pd,
               {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_DIFF_DST, diff_dst_mem}},
               DNNL_ARG_DIFF_WEIGHTS, Output(*plan.weights_diff_weights, diff_weights));
    }
    s.wait();
  });
}

}  // extern "C"
