//! Hot operations of the train step with kernels of their own on Burn's Flex CPU backend,
//! wired in through Burn's backend-extension mechanism and differentiated by hand.
//!
//! - [`batch_norm`]: training-mode batch normalisation in a few passes over the data, forward
//!   and backward, with the ReLU that follows it fused in (Burn's generic version makes about
//!   a dozen, two of them transposing copies).
//! - [`layout`]: plain and channel-blocked feature maps (oneDNN's own layout, which models
//!   keep between convolutions on the oneDNN route), and the moves between them.
//! - [`mix`]: the mix of hidden states, forward and backward, one pass each.
//! - `lanes`: the kernels' inner loops, compiled per vector width and picked at run time.
//! - `onednn` (built wherever oneDNN is installed, see `build.rs`): convolution forward, input
//!   gradient and weight gradient on oneDNN, the library PyTorch's CPU convolutions use.
//! - `direct`: convolutions of our own, forward and both gradients, for builds without oneDNN
//!   (and whatever the oneDNN route leaves).
//!
//! Each route checks that its tensors are f32 on Flex (`on_flex_f32`); anything else (other
//! dtypes, GPU backends) takes Burn's own operation, so models call these unconditionally.
//! `MMIX_KERNELS=generic` in the environment sends Flex down that generic path too: the same
//! Burn operations, in the same order, that a CUDA or wgpu device is given, so the GPU path's
//! code is tested on any CPU ([`own_kernels`]).

pub mod batch_norm;
#[cfg(test)]
pub(crate) mod bf16_bound;
pub(crate) mod direct;
mod lanes;
pub mod layout;
pub mod mix;
#[cfg(mmix_onednn)]
pub mod onednn;

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, Tensor};

/// The arithmetic of the convolutions on the CPU's oneDNN route.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// Convolutions read bf16 operands (input, weights, output gradient) and accumulate in
    /// f32; everything else, the master weights included, stays f32.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

thread_local! {
    static PRECISION: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::F32) };
    static CONVOLUTION_FLOPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static CONVOLUTION_OUTPUTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Adds a convolution's output values to this thread's count, which the memory estimate
/// reads (`ModelConfig::feature_floats_per_image`).
pub(crate) fn count_convolution_outputs(values: u64) {
    CONVOLUTION_OUTPUTS.set(CONVOLUTION_OUTPUTS.get().saturating_add(values));
}

/// The convolutions' output values counted on this thread since the last call.
pub(crate) fn take_convolution_outputs() -> u64 {
    CONVOLUTION_OUTPUTS.replace(0)
}

/// Adds a forward convolution's floating-point operations (two per multiply-add) to this
/// thread's count, which `mmix bench` reads.
pub(crate) fn count_convolution_flops(flops: u64) {
    CONVOLUTION_FLOPS.set(CONVOLUTION_FLOPS.get().saturating_add(flops));
}

/// The forward convolutions' floating-point operations counted on this thread since the
/// last call, on any route and device.
pub(crate) fn take_convolution_flops() -> u64 {
    CONVOLUTION_FLOPS.replace(0)
}

/// The multiply-add peak of the convolutions' loops in `precision` on `device`, in FLOP/s
/// over all threads, where the convolutions run on mmix's own kernels: the peak of the
/// instruction they use. oneDNN may use others (AMX's tiles), Burn's are not ours to run
/// alone, and a GPU's peak is not the CPU's.
pub(crate) fn peak_flops(device: &Device, precision: Precision) -> Option<f64> {
    (convolution_library(device) == "own").then(|| direct::peak_flops(precision))
}

/// The precision of the convolutions this thread starts on the CPU's routes (oneDNN and the
/// own kernels), as [`use_precision`] last set it: f32 at first. A run trains on one thread;
/// tests run on several.
pub fn precision() -> Precision {
    PRECISION.get()
}

/// Makes `precision` the one this thread's convolutions compute in on `device`, or says in
/// one line why it cannot be. With bf16, each convolution reads its input, weights and
/// output gradient in bf16 and accumulates and writes in f32: the master weights, their
/// gradients and every activation outside the convolutions stay f32. bf16 needs the
/// convolutions on oneDNN or on the own kernels, and a CPU with bf16 instructions
/// (`MMIX_FORCE_BF16=1` runs it on slower kernels where the CPU lacks them: oneDNN's, or the
/// own loops' portable ones).
pub(crate) fn use_precision(precision: Precision, device: &Device) -> Result<(), String> {
    if precision == Precision::F32 {
        PRECISION.set(precision);
        return Ok(());
    }
    let forced = std::env::var("MMIX_FORCE_BF16").is_ok_and(|v| v == "1");
    let support = match convolution_library(device) {
        #[cfg(mmix_onednn)]
        "onednn" => onednn::bf16_support().map(|_| ()),
        "own" => direct::bf16_support(),
        _ => {
            return Err(format!(
                "--precision {precision} needs the convolutions on oneDNN or on mmix's own kernels, {}",
                if !is_flex(device) {
                    "which run on the CPU only"
                } else {
                    "which MMIX_OWN_CONV=off or MMIX_KERNELS=generic turned off"
                }
            ));
        }
    };
    match support {
        Ok(()) => {}
        Err((reason, false)) => return Err(format!("--precision bf16: {reason}")),
        Err((reason, true)) if !forced => {
            return Err(format!(
                "--precision bf16: {reason} (MMIX_FORCE_BF16=1 runs it anyway, slowly)"
            ));
        }
        Err(_) => {}
    }
    PRECISION.set(precision);
    Ok(())
}

/// The instruction set the convolutions compute with here in `precision`, on oneDNN or on
/// our own loops; `None` on Burn's.
pub(crate) fn convolution_isa(device: &Device, precision: Precision) -> Option<String> {
    match convolution_library(device) {
        #[cfg(mmix_onednn)]
        "onednn" => Some(onednn::isa().to_string()),
        "own" => Some(direct::isa(precision).to_string()),
        _ => None,
    }
}

/// Whether this process uses mmix's own kernels (and oneDNN) on Flex: `MMIX_KERNELS=generic`
/// in the environment turns them all off, so that Flex takes Burn's generic operations, as a
/// GPU backend does.
pub fn own_kernels() -> bool {
    static OWN: OnceLock<bool> = OnceLock::new();
    *OWN.get_or_init(|| std::env::var("MMIX_KERNELS").as_deref() != Ok("generic"))
}

/// Whether `x` is an f32 tensor on the Flex backend, with or without autodiff, and the own
/// kernels are on.
pub(crate) fn on_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    own_kernels() && x.dtype() == DType::F32 && is_flex(&x.device())
}

fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// Which library computes f32 convolutions on `device`: `"onednn"`, `"own"` (the `direct`
/// loops) or `"burn"`.
pub(crate) fn convolution_library(device: &Device) -> &'static str {
    #[cfg(mmix_onednn)]
    if onednn::enabled() && is_flex(device) {
        return "onednn";
    }
    if direct::enabled() && is_flex(device) {
        return "own";
    }
    "burn"
}

/// How a run on `device` computes its convolutions, for its start line: "on oneDNN (avx2) in
/// f32", "on mmix's own kernels (avx512) in f32", "on Burn's kernels in f32", or nothing off the
/// CPU (the GPU backends choose).
pub(crate) fn convolution_route(device: &Device, precision: Precision) -> Option<String> {
    if !is_flex(device) {
        return None;
    }
    Some(match convolution_isa(device, precision) {
        Some(isa) if convolution_library(device) == "onednn" => {
            format!("on oneDNN ({isa}) in {precision}")
        }
        Some(isa) => format!("on mmix's own kernels ({isa}) in {precision}"),
        None if !own_kernels() => {
            format!(
                "on Burn's generic operations, as on a GPU (MMIX_KERNELS=generic), in {precision}"
            )
        }
        None => format!("on Burn's kernels in {precision}"),
    })
}

/// On a CPU that computes bf16 convolutions natively, and a run in f32 on oneDNN or the own
/// kernels: the line that says `--precision bf16` exists and what it gave. Not a default: it
/// changes the numerics.
pub(crate) fn bf16_note(device: &Device, precision: Precision) -> Option<&'static str> {
    if precision != Precision::F32 {
        return None;
    }
    match convolution_library(device) {
        #[cfg(mmix_onednn)]
        "onednn" if onednn::bf16_support().is_ok() => Some(
            "note: this CPU computes bf16 convolutions natively: `--precision bf16` trained PreActResNet-18 1.4x (width 16) to 1.8x (width 64) faster on an AVX512-BF16 CPU, with bf16 rounding of the convolutions' operands (README: Speed on the CPU)",
        ),
        "own" if direct::bf16_support().is_ok() => Some(
            "note: this CPU multiplies bf16 natively (AVX512-BF16): `--precision bf16` stepped PreActResNet-18 1.6x (width 16) to 1.7x (width 64) faster on mmix's own kernels (AMD EPYC Zen 4), with bf16 rounding of the convolutions' operands (README: Speed on the CPU)",
        ),
        _ => None,
    }
}

/// What a user on `device` should know about the CPU's fast path: `None` where convolutions
/// run on oneDNN (or off the CPU), else the line that says how to get it.
pub(crate) fn fast_path_note(device: &Device) -> Option<&'static str> {
    if !is_flex(device) || convolution_library(device) == "onednn" {
        return None;
    }
    Some(match (cfg!(mmix_onednn), convolution_library(device)) {
        (true, "own") => {
            "note: MMIX_ONEDNN=off: convolutions run on mmix's own kernels, slower than on oneDNN here (BENCHMARKS.md)"
        }
        (true, _) => {
            "note: convolutions run on Burn's kernels, about 3-4x slower than on oneDNN here (BENCHMARKS.md)"
        }
        (false, "own") => {
            "note: this build has no oneDNN: convolutions run on mmix's own kernels; `apt-get install libdnnl-dev`, then `cargo build --release` again, makes them faster (BENCHMARKS.md)"
        }
        (false, _) => {
            "note: convolutions run on Burn's kernels, about 3-4x slower than on oneDNN (BENCHMARKS.md); `apt-get install libdnnl-dev`, then `cargo build --release` again, for the fast path"
        }
    })
}

/// A buffer of `len` values, filled in parallel chunk by chunk: `fill(index, chunk)` must write
/// every element of the `index`-th chunk of `chunk` elements. Nothing is zeroed first, which
/// would cost a pass over the whole buffer.
fn filled_in_parallel(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(index, values)| fill(index, values));
    // SAFETY: the chunks tile the buffer and every caller's `fill` writes its whole chunk
    // (each zips the chunk with input slices of the same length).
    unsafe { out.set_len(len) };
    out
}

/// A random feature map `[n, c, h, w]` and weights `[out, c, k, k]` (`out = [out, k]`) for the
/// convolution routes' tests.
#[cfg(test)]
pub(crate) fn conv_inputs(
    device: &Device,
    x: [usize; 4],
    out: [usize; 2],
) -> (Tensor<4>, Tensor<4>) {
    use burn::tensor::Distribution;
    let x = Tensor::random(x, Distribution::Normal(0.0, 1.0), device);
    let weight = Tensor::random(
        [out[0], x.dims()[1], out[1], out[1]],
        Distribution::Normal(0.0, 0.3),
        device,
    );
    (x, weight)
}
