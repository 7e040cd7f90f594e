//! Hot operations of the train step with kernels of their own on Burn's Flex CPU backend,
//! wired in through Burn's backend-extension mechanism and differentiated by hand.
//!
//! - [`batch_norm`]: training-mode batch normalisation in two passes over the data, forward
//!   and backward (Burn's generic version makes about a dozen, two of them transposing copies).
//! - [`onednn`] (cargo feature `onednn`): convolution forward, input gradient and weight
//!   gradient on oneDNN, the library PyTorch's CPU convolutions use.
//!
//! Each route checks that its tensors are f32 on Flex ([`on_flex_f32`]); anything else (other
//! dtypes, GPU backends) takes Burn's own operation, so models call these unconditionally.

pub mod batch_norm;
#[cfg(feature = "onednn")]
pub mod onednn;

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Tensor};

/// Whether `x` is an f32 tensor on the Flex backend, with or without autodiff.
pub fn on_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32
        && matches!(
            x.device().as_dispatch().clone().inner(),
            DispatchDevice::Flex(_)
        )
}
