/// Images of one split, held as raw bytes in `[count, channels, size, size]` order.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Pixel bytes, image after image.
    pub pixels: Vec<u8>,
    /// The class of each image.
    pub labels: Vec<usize>,
    /// Channels per image.
    pub channels: usize,
    /// Height and width of each image.
    pub size: usize,
}

/// Every `old`×`old` plane of `pixels` centred in a `size`×`size` plane of zeros (the odd
/// pixel, if any, at the bottom and right); refused where `size` < `old`.
fn padded_planes(pixels: &[u8], old: usize, size: usize) -> Result<Vec<u8>, super::DataError> {
    if size < old {
        return Err(super::DataError::PadBelowSize {
            to: size,
            size: old,
        });
    }
    let before = (size - old) / 2;
    let planes = pixels.len().checked_div(old * old).unwrap_or(0);
    let mut padded = vec![0u8; planes * size * size];
    for (plane, target) in pixels
        .chunks_exact(old * old)
        .zip(padded.chunks_exact_mut(size * size))
    {
        for (y, row) in plane.chunks_exact(old).enumerate() {
            let start = (y + before) * size + before;
            target[start..start + old].copy_from_slice(row);
        }
    }
    Ok(padded)
}

/// Images without labels, held as [`ImageSet`]'s pixels are: the unlabelled pool of
/// semi-supervised training. It has no labels at all, so no code path can read one.
#[derive(Clone, Debug, PartialEq)]
pub struct UnlabeledSet {
    /// Pixel bytes, image after image.
    pub pixels: Vec<u8>,
    /// Channels per image.
    pub channels: usize,
    /// Height and width of each image.
    pub size: usize,
}

impl UnlabeledSet {
    /// Images in the set.
    pub fn len(&self) -> usize {
        self.pixels.len().checked_div(self.image_len()).unwrap_or(0)
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Bytes per image: channels × size × size.
    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// The bytes of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[index * len..(index + 1) * len]
    }

    /// The set with every image padded to `size`×`size`, as [`ImageSet::padded`] pads.
    pub fn padded(&self, size: usize) -> Result<UnlabeledSet, super::DataError> {
        Ok(UnlabeledSet {
            pixels: padded_planes(&self.pixels, self.size, size)?,
            channels: self.channels,
            size,
        })
    }
}

impl ImageSet {
    /// Images in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: channels × size × size.
    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// The bytes of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[index * len..(index + 1) * len]
    }

    /// The set with every image padded to `size`×`size` with zero pixels, the same on every
    /// side (the odd pixel, if any, at the bottom and right).
    pub fn padded(&self, size: usize) -> Result<ImageSet, super::DataError> {
        Ok(ImageSet {
            pixels: padded_planes(&self.pixels, self.size, size)?,
            labels: self.labels.clone(),
            channels: self.channels,
            size,
        })
    }

    /// A new set holding the given examples, in the given order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        ImageSet {
            pixels: self.unlabeled(indices).pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            size: self.size,
        }
    }

    /// The given examples' images without their labels, in the given order: an unlabelled
    /// pool built this way holds nothing a training objective could read a label from.
    pub fn unlabeled(&self, indices: &[usize]) -> UnlabeledSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        UnlabeledSet {
            pixels,
            channels: self.channels,
            size: self.size,
        }
    }

    /// How many images each of `classes` classes has.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1].
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let plane = self.size * self.size;
        let mut sums = vec![0f64; self.channels];
        let mut squares = vec![0f64; self.channels];
        if plane == 0 {
            return (vec![0.0; self.channels], vec![1.0; self.channels]);
        }
        for image in self.pixels.chunks_exact(self.image_len()) {
            for (c, values) in image.chunks_exact(plane).enumerate() {
                let (s, q) = values.iter().fold((0u64, 0u64), |(s, q), &v| {
                    (s + v as u64, q + (v as u64) * (v as u64))
                });
                sums[c] += s as f64;
                squares[c] += q as f64;
            }
        }
        let n = (self.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sums.iter().map(|s| s / n / 255.0).collect();
        let std = squares
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / n / (255.0 * 255.0) - m * m).max(0.0).sqrt())
            .map(|s| if s > 1e-6 { s } else { 1.0 })
            .collect::<Vec<_>>();
        (
            mean.iter().map(|&m| m as f32).collect(),
            std.iter().map(|&s| s as f32).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_centres_each_image_among_zero_pixels() {
        let set = ImageSet {
            pixels: vec![1, 2, 3, 4, 5, 6, 7, 8],
            labels: vec![0, 1],
            channels: 1,
            size: 2,
        };
        let padded = set.padded(5).unwrap();
        assert_eq!(padded.size, 5);
        assert_eq!(padded.labels, set.labels);
        #[rustfmt::skip]
        let first = [
            0, 0, 0, 0, 0,
            0, 1, 2, 0, 0,
            0, 3, 4, 0, 0,
            0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,
        ];
        assert_eq!(padded.image(0), first);
        assert_eq!(
            padded.image(1).iter().map(|&p| p as u32).sum::<u32>(),
            5 + 6 + 7 + 8
        );
        assert_eq!(set.padded(2).unwrap(), set);
        assert!(set.padded(1).is_err());
    }
}
