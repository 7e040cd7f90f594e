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
    /// Channels of the feature map.
    pub channels: usize,
    /// Its height.
    pub height: usize,
    /// Its width.
    pub width: usize,
    /// Side of the square blocks masked together.
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

    /// Elements of the mask.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the mask has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `value(channel, y, x)` for every element of `out` (of [`MapLayout::len`] elements), in
    /// memory order.
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
    /// First row inside the box.
    pub top: usize,
    /// First row below it.
    pub bottom: usize,
    /// First column inside the box.
    pub left: usize,
    /// First column right of it.
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

    /// Pixels inside the box.
    pub fn area(&self) -> usize {
        (self.bottom - self.top) * (self.right - self.left)
    }

    /// Whether pixel (`y`, `x`) is inside.
    pub fn contains(&self, y: usize, x: usize) -> bool {
        (self.top..self.bottom).contains(&y) && (self.left..self.right).contains(&x)
    }
}

/// PatchUp's mask of one example (or batch), written into `out` (an example's weights in
/// memory order): `inside` on every altered feature of `[channels, height, width]`, 1 on the
/// rest. Block centres are drawn per feature with the probability PatchUp's code uses (`γ`
/// corrected for the blocks' overlap), by geometric gaps between them (a draw per centre, not
/// per feature), and grown to `block × block` squares clipped at the border, one channel's
/// plane at a time (rows, then columns: a sliding count each). Returns how many features
/// were altered.
#[allow(clippy::expect_used, reason = "cannot fail: a probability in (0, 1)")]
pub fn patch_mask(
    config: &PatchUpConfig,
    rng: &mut impl Rng,
    layout: &MapLayout,
    inside: f32,
    out: &mut [f32],
) -> usize {
    let (h, w, lanes) = (layout.height, layout.width, layout.block);
    let plane_len = h * w;
    let block = config.block.max(1);
    let room = |side: usize| (side + 1).saturating_sub(block).max(1) as f64;
    let centre_prob = (config.gamma * plane_len as f64
        / ((block * block) as f64 * room(h) * room(w)))
    .clamp(0.0, 1.0);
    let gaps = (centre_prob > 0.0 && centre_prob < 1.0)
        .then(|| Geometric::new(centre_prob).expect("a probability in (0, 1)"));
    let mut next_centre = |from: u64| -> u64 {
        match &gaps {
            Some(gaps) => from + gaps.sample(rng),
            None if centre_prob >= 1.0 => from,
            None => u64::MAX,
        }
    };
    let reach = block / 2;
    let mut centres = vec![0u32; plane_len];
    let mut across = vec![0u32; plane_len];
    let mut column_counts = vec![0u32; w];
    let mut altered = 0;
    let mut at = next_centre(0);
    for channel in 0..layout.channels {
        let plane_end = ((channel + 1) * plane_len) as u64;
        centres.fill(0);
        while at < plane_end {
            centres[at as usize - channel * plane_len] = 1;
            at = next_centre(at + 1);
        }
        // Each feature's count of centres within `reach` along its row...
        for (row, sums) in centres.chunks_exact(w).zip(across.chunks_exact_mut(w)) {
            let mut count: u32 = row[..reach.min(w)].iter().sum();
            for x in 0..w {
                if x + reach < w {
                    count += row[x + reach];
                }
                sums[x] = count;
                if x >= reach {
                    count -= row[x - reach];
                }
            }
        }
        // ...then within `reach` along its column: a hole where any square covers it.
        let (blocked, lane) = (channel / lanes, channel % lanes);
        column_counts.fill(0);
        for sums in across.chunks_exact(w).take(reach.min(h)) {
            column_counts
                .iter_mut()
                .zip(sums)
                .for_each(|(c, &s)| *c += s);
        }
        for y in 0..h {
            if y + reach < h {
                let sums = &across[(y + reach) * w..][..w];
                column_counts
                    .iter_mut()
                    .zip(sums)
                    .for_each(|(c, &s)| *c += s);
            }
            let start = (blocked * h + y) * w * lanes + lane;
            for (x, &count) in column_counts.iter().enumerate() {
                let hole = count > 0;
                altered += hole as usize;
                out[start + x * lanes] = if hole { inside } else { 1.0 };
            }
            if y >= reach {
                let sums = &across[(y - reach) * w..][..w];
                column_counts
                    .iter_mut()
                    .zip(sums)
                    .for_each(|(c, &s)| *c -= s);
            }
        }
    }
    altered
}

/// Per-element weights of each example's own state for a box or block mix, and each
/// example's target weight (the share of itself it keeps).
pub struct ElementWeights {
    /// Stretches of `layout.len()` weights: one shared by the batch, or one per example mixed.
    pub values: Vec<f32>,
    /// Per example, its stretch of `values`, or `None` where it is mixed at another point and
    /// keeps itself; `None` for the whole batch when one stretch is shared.
    pub stretches: Option<Vec<Option<usize>>>,
    /// Each example's target weight: the share of itself the mask kept.
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
            MixOp::PatchUp {
                config,
                seed,
                first_row,
            } => {
                let mut rng = ChaCha12Rng::seed_from_u64(*seed);
                rng.set_stream((first_row + row) as u64);
                let inside = match config.kind {
                    PatchUpKind::Soft => draw.lambda,
                    PatchUpKind::Hard => 0.0,
                };
                let altered = patch_mask(config, &mut rng, layout, inside as f32, out);
                let changed = altered as f64 / layout.len() as f64;
                1.0 - changed * (1.0 - inside)
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
                stretches: None,
                targets: vec![kept; batch],
            }
        }
        Draws::PerExample(per_row) => {
            let mixed: Vec<(usize, &Draw)> = (0..batch)
                .filter_map(|row| per_row.get(row)?.as_ref().map(|draw| (row, draw)))
                .collect();
            let mut stretches = vec![None; batch];
            for (k, &(row, _)) in mixed.iter().enumerate() {
                stretches[row] = Some(k);
            }
            let mut values = vec![0.0; mixed.len() * layout.len()];
            let mut kept = vec![1.0; mixed.len()];
            values
                .par_chunks_mut(layout.len().max(1))
                .zip(kept.par_iter_mut())
                .zip(mixed.par_iter())
                .for_each(|((out, kept), &(row, draw))| *kept = one(row, draw, out));
            let mut targets = vec![1.0; batch];
            for (&(row, _), kept) in mixed.iter().zip(kept) {
                targets[row] = kept;
            }
            ElementWeights {
                values,
                stretches: Some(stretches),
                targets,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl MapLayout {
        fn fill(&self, value: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
            let mut out = vec![0.0; self.len()];
            self.fill_into(&mut out, value);
            out
        }
    }

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
            let mut weights = vec![1.0; layout.len()];
            let altered = patch_mask(&config, &mut rng, &layout, 0.0, &mut weights);
            let n = weights.len() as f64;
            assert_eq!(altered, weights.iter().filter(|&&w| w == 0.0).count());
            let share = altered as f64 / n;
            let sigma = (gamma * (1.0 - gamma) / n).sqrt();
            assert!((share - gamma).abs() <= 4.0 * sigma, "γ {gamma}: {share}");
        }
        // Larger blocks cover squares around each centre, clipped at the border.
        let config = PatchUpConfig {
            block: 3,
            gamma: 0.9,
            kind: PatchUpKind::Soft,
        };
        // Blocked and plain layouts alter the same features for the same draws.
        let plain = MapLayout::of(&[1, 8, 9, 9]).unwrap();
        let blocked = MapLayout::of(&[1, 2, 9, 9, 4]).unwrap();
        let masks = [plain, blocked].map(|layout| {
            let mut weights = vec![1.0; layout.len()];
            let altered = patch_mask(
                &config,
                &mut ChaCha12Rng::seed_from_u64(8),
                &layout,
                0.5,
                &mut weights,
            );
            (weights, altered, layout)
        });
        assert_eq!(masks[0].1, masks[1].1);
        assert!(masks[0].1 > 0 && masks[0].1 < plain.len());
        let at =
            |(weights, _, layout): &(Vec<f32>, usize, MapLayout), c: usize, y: usize, x: usize| {
                let (b, lane) = (c / layout.block, c % layout.block);
                weights[((b * 9 + y) * 9 + x) * layout.block + lane]
            };
        for c in 0..8 {
            for y in 0..9 {
                for x in 0..9 {
                    assert_eq!(at(&masks[0], c, y, x), at(&masks[1], c, y, x));
                }
            }
        }
    }

    /// The mask by its definition: every square around every centre, marked one by one.
    fn squares_marked_one_by_one(
        config: &PatchUpConfig,
        seed: u64,
        layout: &MapLayout,
    ) -> Vec<f32> {
        let (h, w) = (layout.height, layout.width);
        let block = config.block;
        let room = |side: usize| (side + 1).saturating_sub(block).max(1) as f64;
        let p = (config.gamma * (h * w) as f64 / ((block * block) as f64 * room(h) * room(w)))
            .clamp(0.0, 1.0);
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let gaps = Geometric::new(p).unwrap();
        let mut holes = vec![false; layout.len()];
        let mut at = gaps.sample(&mut rng);
        let reach = block / 2;
        while at < layout.len() as u64 {
            let centre = at as usize;
            let (c, y, x) = (centre / (h * w), centre / w % h, centre % w);
            for yy in y.saturating_sub(reach)..(y + reach + 1).min(h) {
                for xx in x.saturating_sub(reach)..(x + reach + 1).min(w) {
                    holes[(c * h + yy) * w + xx] = true;
                }
            }
            at += 1 + gaps.sample(&mut rng);
        }
        layout.fill(|c, y, x| if holes[(c * h + y) * w + x] { 0.0 } else { 1.0 })
    }

    #[test]
    fn sliding_counts_mark_exactly_the_squares() {
        for (block, dims) in [
            (3, vec![1, 4, 9, 7]),
            (7, vec![1, 2, 12, 12, 8]),
            (5, vec![1, 3, 4, 4]),
            (1, vec![1, 2, 6, 6]),
        ] {
            let layout = MapLayout::of(&dims).unwrap();
            let config = PatchUpConfig {
                block,
                gamma: 0.6,
                kind: PatchUpKind::Hard,
            };
            let expected = squares_marked_one_by_one(&config, 4, &layout);
            let mut weights = vec![f32::NAN; layout.len()];
            let altered = patch_mask(
                &config,
                &mut ChaCha12Rng::seed_from_u64(4),
                &layout,
                0.0,
                &mut weights,
            );
            assert_eq!(weights, expected, "block {block} on {dims:?}");
            assert_eq!(altered, expected.iter().filter(|&&w| w == 0.0).count());
        }
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
