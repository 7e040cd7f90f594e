//! The two layouts of a feature map: plain `[N, C, H, W]`, and channel-blocked
//! `[N, C / b, H, W, b]`, where each image's channels come in blocks of `b` stored innermost
//! (oneDNN's `nChw16c` for `b = 16`, `nChw8c` for `b = 8`). oneDNN's fast convolutions compute
//! in the blocked layout; keeping the activations in it between convolutions saves converting
//! every convolution's input and output, forward and backward.
//!
//! A plain map is also a blocked one with `b = 1` (`[N, C, H, W, 1]`, the same memory), which
//! is how models that take both layouts hold it on other routes.

use burn::tensor::Tensor;

/// How a convolution writes its output: plain `[N, C, H, W]`, or `[N, C / b, H, W, b]` in
/// blocks of `b` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[N, C, H, W]`.
    Plain,
    /// `[N, C / b, H, W, b]`.
    Blocked(usize),
}

impl Layout {
    /// Channels per block (1 for plain).
    pub fn block(self) -> usize {
        match self {
            Layout::Plain => 1,
            Layout::Blocked(block) => block,
        }
    }

    /// The rank of a map in this layout.
    pub fn rank(self) -> usize {
        match self {
            Layout::Plain => 4,
            Layout::Blocked(_) => 5,
        }
    }

    /// The shape of a map of `[n, c, h, w]` in this layout.
    pub fn dims(self, [n, c, h, w]: [usize; 4]) -> Vec<usize> {
        match self {
            Layout::Plain => vec![n, c, h, w],
            Layout::Blocked(b) => vec![n, c / b, h, w, b],
        }
    }
}

/// Channels per block of a rank-4 (plain) or rank-5 (blocked) feature map's shape.
#[allow(clippy::panic, reason = "cannot fail: a feature map of shape …")]
pub(crate) fn block_of(dims: &[usize]) -> usize {
    match *dims {
        [_, _, _, _] => 1,
        [_, _, _, _, block] => block,
        _ => panic!("a feature map of shape {dims:?}"),
    }
}

/// Channels of a plain or blocked feature map's shape.
pub(crate) fn channels_of(dims: &[usize]) -> usize {
    dims[1] * block_of(dims)
}

/// `x`, plain or blocked, in the plain layout `[N, C, H, W]` (a copy only when `b > 1`).
#[allow(clippy::panic, reason = "cannot fail: a feature map of shape …")]
pub(crate) fn to_plain<const D: usize>(x: Tensor<D>) -> Tensor<4> {
    let dims = x.dims();
    match dims[..] {
        [n, c, h, w] => x.reshape([n, c, h, w]),
        [n, blocks, h, w, 1] => x.reshape([n, blocks, h, w]),
        [n, blocks, h, w, block] => x
            .reshape([n, blocks, h, w, block])
            .permute([0, 1, 4, 2, 3])
            .reshape([n, blocks * block, h, w]),
        _ => panic!("a feature map of shape {dims:?}"),
    }
}

/// A plain `[N, C, H, W]` map as a rank-`D` map: plain for `D = 4`, else in blocks of
/// `block` channels (`block` must divide `C`).
#[allow(clippy::panic, reason = "cannot fail: a rank-… feature map")]
pub(crate) fn from_plain<const D: usize>(x: Tensor<4>, block: usize) -> Tensor<D> {
    let [n, c, h, w] = x.dims();
    let as_rank_d = |dims: Vec<usize>| -> [usize; D] {
        dims.try_into()
            .unwrap_or_else(|_| panic!("a rank-{D} feature map"))
    };
    if D == 4 {
        assert_eq!(block, 1, "a plain map has blocks of one channel");
        return x.reshape(as_rank_d(vec![n, c, h, w]));
    }
    if block == 1 {
        return x.reshape(as_rank_d(vec![n, c, h, w, 1]));
    }
    assert_eq!(c % block, 0, "{c} channels in blocks of {block}");
    x.reshape([n, c / block, block, h, w])
        .permute([0, 1, 3, 4, 2])
        .reshape(as_rank_d(vec![n, c / block, h, w, block]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn blocked_layout_puts_channel_blocks_innermost() {
        let device = Device::flex();
        // [1, 4, 1, 2]: channel c, column w holds 10 c + w.
        let values: Vec<f32> = (0..4)
            .flat_map(|c| (0..2).map(move |w| (10 * c + w) as f32))
            .collect();
        let plain = Tensor::<4>::from_data(TensorData::new(values, [1, 4, 1, 2]), &device);
        let blocked: Tensor<5> = from_plain(plain.clone(), 2);
        assert_eq!(blocked.dims(), [1, 2, 1, 2, 2]);
        // Block 0 holds channels 0 and 1, pixel by pixel; then block 1 holds 2 and 3.
        let expected = [0.0, 10.0, 1.0, 11.0, 20.0, 30.0, 21.0, 31.0];
        assert_eq!(
            blocked.clone().into_data().try_to_vec::<f32>().unwrap(),
            expected
        );
        assert_eq!(to_plain(blocked).into_data(), plain.clone().into_data());
        assert_eq!(block_of(&[1, 2, 1, 2, 2]), 2);
        assert_eq!(channels_of(&[1, 2, 1, 2, 2]), 4);
        let unit: Tensor<5> = from_plain(plain.clone(), 1);
        assert_eq!(to_plain(unit).into_data(), plain.into_data());
    }
}
