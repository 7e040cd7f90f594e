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
//! - [`onednn`] (cargo feature `onednn`): convolution forward, input gradient and weight
//!   gradient on oneDNN, the library PyTorch's CPU convolutions use.
//!
//! Each route checks that its tensors are f32 on Flex ([`on_flex_f32`]); anything else (other
//! dtypes, GPU backends) takes Burn's own operation, so models call these unconditionally.

pub mod batch_norm;
mod lanes;
pub mod layout;
pub mod mix;
#[cfg(feature = "onednn")]
pub mod onednn;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, Tensor};

/// Whether `x` is an f32 tensor on the Flex backend, with or without autodiff.
pub fn on_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && is_flex(&x.device())
}

fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// Which library computes f32 convolutions on `device`: `"onednn"` or `"burn"`.
pub fn convolution_library(device: &Device) -> &'static str {
    #[cfg(feature = "onednn")]
    if onednn::enabled() && is_flex(device) {
        return "onednn";
    }
    let _ = device;
    "burn"
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
