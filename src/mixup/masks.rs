//! The regions that box and block mixes take from the partner, as per-element weights of an
//! example's own hidden state, in the memory order of the map they apply to.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Geometric};
use rayon::prelude::*;

use super::plan::{Draw, Draws, MixOp, PatchUpConfig, PatchUpKind};

/// One example's feature map as laid out in memory: `[channels, height, width]`, or
/// channel-blocked `[channels/block, height, width, block]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub block: usize,
}

impl MapLayout {
    /// The layout of the examples of a `[batch, …]` tensor, if it is a feature map.
    pub fn of(dims: &[usize]) -> Option<Self> {
        match *dims {
            [_, channels, height, width] => Some(Self {
                channels,
                height,
                width,
                block: 1,
            }),
            [_, blocks, height, width, block] => Some(Self {
                channels: blocks * block,
                height,
                width,
                block,
            }),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `value(channel, y, x)` for every element, in memory order.
    pub fn fill(&self, value: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.fill_into(&mut out, value);
        out
    }

    /// [`MapLayout::fill`] into `out`, of [`MapLayout::len`] elements.
    pub fn fill_into(&self, out: &mut [f32], value: impl Fn(usize, usize, usize) -> f32) {
        let mut slots = out.iter_mut();
        for blocked in 0..self.channels / self.block {
            for y in 0..self.height {
                for x in 0..self.width {
                    for lane in 0..self.block {
                        if let Some(slot) = slots.next() {
                            *slot = value(blocked * self.block + lane, y, x);
                        }
                    }
                }
            }
        }
    }
}

/// Rows `top..bottom` and columns `left..right` of a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutBox {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl CutBox {
    /// timm's `rand_bbox`: sides `⌊side·√(1−λ)⌋` around the centre, clipped at the border.
    pub fn new(lambda: f64, centre: (f64, f64), height: usize, width: usize) -> Self {
        let ratio = (1.0 - lambda).clamp(0.0, 1.0).sqrt();
        let span = |side: usize, at: f64| {
            let half = (side as f64 * ratio) as usize / 2;
            let middle = ((at * side as f64) as usize).min(side.saturating_sub(1));
            (middle.saturating_sub(half), (middle + half).min(side))
        };
        let (top, bottom) = span(height, centre.0);
        let (left, right) = span(width, centre.1);
        Self {
            top,
            bottom,
            left,
            right,
        }
    }

    pub fn area(&self) -> usize {
        (self.bottom - self.top) * (self.right - self.left)
    }

    pub fn contains(&self, y: usize, x: usize) -> bool {
        (self.top..self.bottom).contains(&y) && (self.left..self.right).contains(&x)
    }
}

/// PatchUp's mask of one example (or batch): which features of `[channels, height, width]`
/// are altered. Block centres are drawn per feature with the probability PatchUp's code uses
/// (`γ` corrected for the blocks' overlap), then grown to `block × block` squares. The centres
/// are found by geometric gaps between them, a draw per centre rather than per feature.
pub fn patch_holes(config: &PatchUpConfig, rng: &mut impl Rng, layout: &MapLayout) -> Vec<bool> {
    let (h, w) = (layout.height, layout.width);
    let total = layout.len();
    let block = config.block.max(1);
    let room = |side: usize| (side + 1).saturating_sub(block).max(1) as f64;
    let centre_prob = (config.gamma * (h * w) as f64
        / ((block * block) as f64 * room(h) * room(w)))
    .clamp(0.0, 1.0);
    let mut holes = vec![false; total];
    let mut mark = |centre: usize| {
        let (channel, y, x) = (centre / (h * w), centre / w % h, centre % w);
        let plane = &mut holes[channel * h * w..][..h * w];
        let reach = block / 2;
        for row in y.saturating_sub(reach)..(y + reach + 1).min(h) {
            plane[row * w + x.saturating_sub(reach)..row * w + (x + reach + 1).min(w)].fill(true);
        }
    };
    if centre_prob >= 1.0 {
        (0..total).for_each(&mut mark);
    } else if centre_prob > 0.0 {
        let gaps = Geometric::new(centre_prob).expect("a probability in (0, 1)");
        let mut at = gaps.sample(rng);
        while at < total as u64 {
            mark(at as usize);
            at += 1 + gaps.sample(rng);
        }
    }
    holes
}

/// Per-element weights of each example's own state for a box or block mix, and each
/// example's target weight (the share of itself it keeps).
pub struct ElementWeights {
    /// One row of `layout.len()` weights when shared by the batch, else one per example.
    pub values: Vec<f32>,
    pub shared: bool,
    pub targets: Vec<f64>,
}

/// The weights of `op` (CutMix or PatchUp) with `draws` on maps of `layout`, for a batch of
/// `batch`. Examples mixed at another point keep weight 1 everywhere.
pub fn element_weights(
    op: &MixOp,
    draws: &Draws,
    layout: &MapLayout,
    batch: usize,
) -> ElementWeights {
    // Writes one example's weights into `out` and returns its target weight.
    let one = |row: usize, draw: &Draw, out: &mut [f32]| -> f64 {
        match op {
            MixOp::CutMix => {
                let cut = CutBox::new(
                    draw.lambda,
                    draw.centre.unwrap_or((0.5, 0.5)),
                    layout.height,
                    layout.width,
                );
                layout.fill_into(out, |_, y, x| if cut.contains(y, x) { 0.0 } else { 1.0 });
                1.0 - cut.area() as f64 / (layout.height * layout.width) as f64
            }
            MixOp::PatchUp { config, seed } => {
                let mut rng = ChaCha12Rng::seed_from_u64(*seed);
                rng.set_stream(row as u64);
                let holes = patch_holes(config, &mut rng, layout);
                let changed = holes.iter().filter(|&&h| h).count() as f64 / holes.len() as f64;
                let (inside, kept) = match config.kind {
                    PatchUpKind::Soft => (draw.lambda, 1.0 - changed * (1.0 - draw.lambda)),
                    PatchUpKind::Hard => (0.0, 1.0 - changed),
                };
                let (hw, w) = (layout.height * layout.width, layout.width);
                layout.fill_into(out, |channel, y, x| {
                    if holes[channel * hw + y * w + x] {
                        inside as f32
                    } else {
                        1.0
                    }
                });
                kept
            }
            MixOp::Interpolate => unreachable!("interpolation has no element weights"),
        }
    };
    match draws {
        Draws::Shared(draw) => {
            let mut values = vec![0.0; layout.len()];
            let kept = one(0, draw, &mut values);
            ElementWeights {
                values,
                shared: true,
                targets: vec![kept; batch],
            }
        }
        Draws::PerExample(per_row) => {
            let mut values = vec![1.0; batch * layout.len()];
            let mut targets = vec![1.0; batch];
            values
                .par_chunks_mut(layout.len().max(1))
                .zip(targets.par_iter_mut())
                .enumerate()
                .for_each(|(row, (out, target))| {
                    if let Some(Some(draw)) = per_row.get(row) {
                        *target = one(row, draw, out);
                    }
                });
            ElementWeights {
                values,
                shared: false,
                targets,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_layout_orders_channels_innermost() {
        let plain = MapLayout::of(&[2, 4, 2, 3]).unwrap();
        let blocked = MapLayout::of(&[2, 2, 2, 3, 2]).unwrap();
        assert_eq!((plain.channels, blocked.channels), (4, 4));
        let code = |c: usize, y: usize, x: usize| (c * 100 + y * 10 + x) as f32;
        let plain_values = plain.fill(code);
        assert_eq!(&plain_values[..4], &[0.0, 1.0, 2.0, 10.0]);
        let blocked_values = blocked.fill(code);
        // [blocks, y, x, lane]: channel 0 then 1 at (0, 0), then both at (0, 1).
        assert_eq!(&blocked_values[..4], &[0.0, 100.0, 1.0, 101.0]);
        let sorted = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            v
        };
        assert_eq!(sorted(plain_values), sorted(blocked_values));
        assert!(MapLayout::of(&[2, 8]).is_none());
    }

    #[test]
    fn patch_centres_are_drawn_with_their_probability() {
        // With 1×1 blocks the holes are the centres, drawn with probability γ per feature.
        let layout = MapLayout::of(&[1, 4, 64, 64]).unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        for gamma in [0.0, 0.05, 0.3, 1.0] {
            let config = PatchUpConfig {
                block: 1,
                gamma,
                kind: PatchUpKind::Hard,
            };
            let holes = patch_holes(&config, &mut rng, &layout);
            let n = holes.len() as f64;
            let share = holes.iter().filter(|&&h| h).count() as f64 / n;
            let sigma = (gamma * (1.0 - gamma) / n).sqrt();
            assert!((share - gamma).abs() <= 4.0 * sigma, "γ {gamma}: {share}");
        }
        // Larger blocks cover squares around each centre, clipped at the border.
        let config = PatchUpConfig {
            block: 3,
            gamma: 0.9,
            kind: PatchUpKind::Soft,
        };
        let small = MapLayout::of(&[1, 1, 5, 5]).unwrap();
        let holes = patch_holes(&config, &mut rng, &small);
        assert!(holes.iter().any(|&h| h));
    }

    #[test]
    fn cut_boxes_stay_inside_and_shrink_with_lambda() {
        for (lambda, centre) in [(0.3, (0.5, 0.5)), (0.9, (0.0, 0.99)), (0.0, (0.7, 0.2))] {
            let cut = CutBox::new(lambda, centre, 32, 28);
            assert!(cut.bottom <= 32 && cut.right <= 28, "{cut:?}");
            assert!(cut.area() as f64 <= (1.0 - lambda) * 32.0 * 28.0 + 1e-9);
        }
        assert_eq!(CutBox::new(1.0, (0.5, 0.5), 32, 32).area(), 0);
        // Centred with room to spare, the box is the full ⌊32·√0.75⌋ = 27 rounded down to even.
        let cut = CutBox::new(0.25, (0.5, 0.5), 32, 32);
        assert_eq!((cut.bottom - cut.top, cut.right - cut.left), (26, 26));
    }
}
