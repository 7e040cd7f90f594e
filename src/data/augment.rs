//! Random crop with zero padding, horizontal flip and normalisation, assembled into a batch.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{ImageSet, UnlabeledSet};

/// Training-time augmentation, drawn from the run's RNG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Zero padding before a random crop back to the original size; 0 disables cropping.
    pub crop_padding: usize,
    /// Whether a random half of the images are mirrored left to right.
    pub horizontal_flip: bool,
}

impl Augmentation {
    /// No augmentation: every image as it is.
    pub fn none() -> Self {
        Self {
            crop_padding: 0,
            horizontal_flip: false,
        }
    }
}

/// Per-channel normalisation `(pixel / 255 − mean) / std`, through a lookup table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean subtracted from the pixels (in [0, 1]).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation the pixels are divided by.
    pub std: Vec<f32>,
}

impl Normalization {
    fn table(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| std::array::from_fn(|v| (v as f32 / 255.0 - m) / s))
            .collect()
    }
}

/// A batch ready for the device: `[len, channels, size, size]` floats and the labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Normalised pixels, `[batch, channels, size, size]` row-major.
    pub images: Vec<f32>,
    /// The class of each image.
    pub labels: Vec<usize>,
    /// Channels per image.
    pub channels: usize,
    /// Height and width of each image.
    pub size: usize,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Where one augmented image lies in its crop window, and whether it is mirrored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Vertical shift of the crop, in pixels.
    pub dy: isize,
    /// Horizontal shift of the crop, in pixels.
    pub dx: isize,
    /// Whether the image is mirrored.
    pub flip: bool,
}

impl Augmentation {
    /// The placements of `count` images, drawn in order (crop offsets, then flip, per image),
    /// so a batch is reproducible from the RNG state; draws nothing where nothing is random.
    pub fn placements<R: Rng + ?Sized>(&self, count: usize, rng: &mut R) -> Vec<Placement> {
        let pad = self.crop_padding as i64;
        (0..count)
            .map(|_| {
                let (dy, dx) = if pad > 0 {
                    (
                        rng.random_range(-pad..=pad) as isize,
                        rng.random_range(-pad..=pad) as isize,
                    )
                } else {
                    (0, 0)
                };
                let flip = self.horizontal_flip && rng.random_bool(0.5);
                Placement { dy, dx, flip }
            })
            .collect()
    }
}

/// Builds the batch of `indices`, augmenting each image when `augment` is given.
pub fn make_batch<R: Rng + ?Sized>(
    set: &ImageSet,
    indices: &[usize],
    normalization: &Normalization,
    augment: Option<(&Augmentation, &mut R)>,
) -> Batch {
    let placements = augment.map(|(aug, rng)| aug.placements(indices.len(), rng));
    assemble_batch(set, indices, normalization, placements.as_deref())
}

/// Builds the batch of `indices` with each image at its placement (none: as it is). The
/// placements of a whole global batch are drawn once; each data-parallel rank assembles its
/// own rows with theirs.
pub fn assemble_batch(
    set: &ImageSet,
    indices: &[usize],
    normalization: &Normalization,
    placements: Option<&[Placement]>,
) -> Batch {
    Batch {
        images: normalised_images(
            |i| set.image(i),
            (set.channels, set.size),
            indices,
            normalization,
            placements,
        ),
        labels: indices.iter().map(|&i| set.labels[i]).collect(),
        channels: set.channels,
        size: set.size,
    }
}

/// The unlabelled images at `indices`, normalised and placed as [`assemble_batch`] does,
/// `[batch, channels, size, size]` row-major.
pub fn assemble_unlabeled(
    set: &UnlabeledSet,
    indices: &[usize],
    normalization: &Normalization,
    placements: &[Placement],
) -> Vec<f32> {
    normalised_images(
        |i| set.image(i),
        (set.channels, set.size),
        indices,
        normalization,
        Some(placements),
    )
}

fn normalised_images<'a>(
    image: impl Fn(usize) -> &'a [u8],
    (channels, size): (usize, usize),
    indices: &[usize],
    normalization: &Normalization,
    placements: Option<&[Placement]>,
) -> Vec<f32> {
    let plane = size * size;
    let table = normalization.table();
    let zero: Vec<f32> = table.iter().map(|t| t[0]).collect();
    let mut images = vec![0f32; indices.len() * channels * plane];
    for (slot, &index) in indices.iter().enumerate() {
        let Placement { dy, dx, flip } = placements.map_or(Placement::default(), |p| p[slot]);
        let source = image(index);
        let target = &mut images[slot * channels * plane..(slot + 1) * channels * plane];
        for c in 0..channels {
            let src = &source[c * plane..(c + 1) * plane];
            let dst = &mut target[c * plane..(c + 1) * plane];
            let lut = &table[c];
            for y in 0..size {
                let sy = y as isize + dy;
                let row = &mut dst[y * size..(y + 1) * size];
                if sy < 0 || sy >= size as isize {
                    row.fill(zero[c]);
                    continue;
                }
                let src_row = &src[sy as usize * size..(sy as usize + 1) * size];
                for (x, out) in row.iter_mut().enumerate() {
                    let x = if flip { size - 1 - x } else { x };
                    let sx = x as isize + dx;
                    *out = if sx < 0 || sx >= size as isize {
                        zero[c]
                    } else {
                        lut[src_row[sx as usize] as usize]
                    };
                }
            }
        }
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    fn ramp() -> ImageSet {
        ImageSet {
            pixels: (0..16).map(|v| v as u8 * 10).collect(),
            labels: vec![3],
            channels: 1,
            size: 4,
        }
    }

    fn identity() -> Normalization {
        Normalization {
            mean: vec![0.0],
            std: vec![1.0 / 255.0],
        }
    }

    #[test]
    fn without_augmentation_pixels_are_normalised_in_place() {
        let batch = make_batch::<ChaCha12Rng>(&ramp(), &[0], &identity(), None);
        for (v, got) in batch.images.iter().enumerate() {
            assert!((got - v as f32 * 10.0).abs() < 1e-3, "{:?}", batch.images);
        }
        assert_eq!(batch.labels, vec![3]);
    }

    #[test]
    fn crops_are_shifted_windows_with_zero_padding_and_flips_mirror() {
        let set = ramp();
        let aug = Augmentation {
            crop_padding: 2,
            horizontal_flip: true,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let mut saw_shift = false;
        for _ in 0..50 {
            let out: Vec<f32> = make_batch(&set, &[0], &identity(), Some((&aug, &mut rng)))
                .images
                .iter()
                .map(|v| v.round())
                .collect();
            // Every output pixel is either padding (0) or some source pixel.
            assert!(
                out.iter()
                    .all(|&v| v == 0.0 || set.pixels.contains(&(v as u8)))
            );
            // Rows keep their horizontal structure: a run of consecutive source pixels.
            let nonzero = out.iter().filter(|&&v| v > 0.0).count();
            // A crop of ±2 on 4×4 keeps at least 2×2 source pixels, one of which may be the 0 pixel.
            assert!(nonzero >= 3);
            saw_shift |= out != set.pixels.iter().map(|&p| p as f32).collect::<Vec<_>>();
        }
        assert!(saw_shift);
        let again = |seed| {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            make_batch(&set, &[0, 0, 0], &identity(), Some((&aug, &mut rng))).images
        };
        assert_eq!(again(5), again(5));
    }

    #[test]
    fn flip_alone_mirrors_rows() {
        let set = ramp();
        let aug = Augmentation {
            crop_padding: 0,
            horizontal_flip: true,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let plain = make_batch::<ChaCha12Rng>(&set, &[0], &identity(), None).images;
        let mut flipped_seen = false;
        for _ in 0..20 {
            let out = make_batch(&set, &[0], &identity(), Some((&aug, &mut rng))).images;
            if out != plain {
                for y in 0..4 {
                    let row: Vec<f32> = plain[y * 4..y * 4 + 4].iter().rev().copied().collect();
                    assert_eq!(&out[y * 4..y * 4 + 4], row.as_slice());
                }
                flipped_seen = true;
            }
        }
        assert!(flipped_seen);
    }
}
