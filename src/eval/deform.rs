//! Novel deformations of the test set (the paper's Table 4): seeded rotation, shearing and
//! zoom, applied to the raw images before normalisation, none of them seen in training.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde_with::{DeserializeFromStr, SerializeDisplay};

use super::EvalError;
use crate::data::ImageSet;

/// A family of affine deformations about the image centre, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, SerializeDisplay, DeserializeFromStr)]
pub enum Deformation {
    /// `rotate:D`: each image rotated by an angle drawn from U(−D°, D°).
    Rotate {
        /// D.
        max_degrees: f64,
    },
    /// `shear:D`: each image sheared horizontally by an angle drawn from U(−D°, D°).
    Shear {
        /// D.
        max_degrees: f64,
    },
    /// `zoom-out:P` (P ≥ 100) or `zoom-in:P` (P ≤ 100): the view covers P% of the original
    /// field, so the content is scaled by 100/P (zoom-out 120: content at 83%).
    Zoom {
        /// P.
        field_percent: f64,
    },
}

impl FromStr for Deformation {
    type Err = EvalError;

    fn from_str(text: &str) -> Result<Self, EvalError> {
        let bad = |reason: &str| EvalError::BadDeformation {
            spec: text.to_string(),
            reason: reason.to_string(),
        };
        let (kind, value) = text.split_once(':').ok_or_else(|| {
            bad("expected rotate:DEGREES, shear:DEGREES, zoom-out:PERCENT or zoom-in:PERCENT")
        })?;
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| bad("the parameter must be a finite number ≥ 0"))?;
        match kind {
            "rotate" if value <= 180.0 => Ok(Deformation::Rotate { max_degrees: value }),
            "rotate" => Err(bad("a rotation angle must be at most 180°")),
            "shear" if value < 90.0 => Ok(Deformation::Shear { max_degrees: value }),
            "shear" => Err(bad("a shear angle must be below 90°")),
            "zoom-out" if value >= 100.0 => Ok(Deformation::Zoom {
                field_percent: value,
            }),
            "zoom-in" if value > 0.0 && value <= 100.0 => Ok(Deformation::Zoom {
                field_percent: value,
            }),
            "zoom-out" | "zoom-in" => Err(bad(
                "zoom-out takes a percentage ≥ 100, zoom-in one in (0, 100]",
            )),
            _ => Err(bad(
                "expected rotate:DEGREES, shear:DEGREES, zoom-out:PERCENT or zoom-in:PERCENT",
            )),
        }
    }
}

impl fmt::Display for Deformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Deformation::Rotate { max_degrees } => write!(f, "rotate:{max_degrees}"),
            Deformation::Shear { max_degrees } => write!(f, "shear:{max_degrees}"),
            Deformation::Zoom { field_percent } if field_percent >= 100.0 => {
                write!(f, "zoom-out:{field_percent}")
            }
            Deformation::Zoom { field_percent } => write!(f, "zoom-in:{field_percent}"),
        }
    }
}

impl Deformation {
    /// In words, with its parameters, for reports.
    pub fn describe(&self) -> String {
        match *self {
            Deformation::Rotate { max_degrees } => {
                format!("rotation U(−{max_degrees}°, {max_degrees}°)")
            }
            Deformation::Shear { max_degrees } => {
                format!("shearing U(−{max_degrees}°, {max_degrees}°)")
            }
            Deformation::Zoom { field_percent } if field_percent >= 100.0 => {
                format!("zoom-out {field_percent}%")
            }
            Deformation::Zoom { field_percent } => format!("zoom-in {field_percent}%"),
        }
    }

    /// The inverse map of one draw, as a 2×2 matrix taking output offsets from the centre
    /// to source offsets (row-major `[a, b, c, d]`: `sx = a·x + b·y`, `sy = c·x + d·y`).
    fn draw_inverse<R: Rng + ?Sized>(&self, rng: &mut R) -> [f64; 4] {
        let angle = |max: f64, rng: &mut R| {
            if max > 0.0 {
                rng.random_range(-max..=max).to_radians()
            } else {
                0.0
            }
        };
        match *self {
            Deformation::Rotate { max_degrees } => {
                let theta = angle(max_degrees, rng);
                let (sin, cos) = theta.sin_cos();
                [cos, sin, -sin, cos]
            }
            Deformation::Shear { max_degrees } => {
                let phi = angle(max_degrees, rng);
                [1.0, -phi.tan(), 0.0, 1.0]
            }
            Deformation::Zoom { field_percent } => {
                let inverse_scale = field_percent / 100.0;
                [inverse_scale, 0.0, 0.0, inverse_scale]
            }
        }
    }

    /// A deformed copy of `set`: each image in order takes its own draw from `rng`, and is
    /// resampled bilinearly with zero (background) outside the original.
    pub fn apply<R: Rng + ?Sized>(&self, set: &ImageSet, rng: &mut R) -> ImageSet {
        let mut out = set.clone();
        let (channels, size) = (set.channels, set.size);
        let plane = size * size;
        for index in 0..set.len() {
            let inverse = self.draw_inverse(rng);
            let source = set.image(index);
            let target = &mut out.pixels[index * channels * plane..(index + 1) * channels * plane];
            warp(source, target, channels, size, inverse);
        }
        out
    }
}

/// Resamples `source` (`channels` planes of `size`²) through the inverse map into `target`.
fn warp(source: &[u8], target: &mut [u8], channels: usize, size: usize, inverse: [f64; 4]) {
    let centre = (size as f64 - 1.0) / 2.0;
    let plane = size * size;
    let [a, b, c, d] = inverse;
    let pixel = |channel: usize, x: isize, y: isize| -> f64 {
        if x < 0 || y < 0 || x >= size as isize || y >= size as isize {
            0.0
        } else {
            source[channel * plane + y as usize * size + x as usize] as f64
        }
    };
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f64 - centre, y as f64 - centre);
            let sx = a * dx + b * dy + centre;
            let sy = c * dx + d * dy + centre;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for channel in 0..channels {
                let top = pixel(channel, x0, y0) * (1.0 - fx) + pixel(channel, x0 + 1, y0) * fx;
                let bottom =
                    pixel(channel, x0, y0 + 1) * (1.0 - fx) + pixel(channel, x0 + 1, y0 + 1) * fx;
                let value = top * (1.0 - fy) + bottom * fy;
                target[channel * plane + y * size + x] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    fn random_set(count: usize, channels: usize, size: usize) -> ImageSet {
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        ImageSet {
            pixels: (0..count * channels * size * size)
                .map(|_| rng.random())
                .collect(),
            labels: (0..count).map(|i| i % 10).collect(),
            channels,
            size,
        }
    }

    #[test]
    fn zero_angle_and_full_field_are_the_identity() {
        let set = random_set(5, 3, 9);
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        for spec in ["rotate:0", "shear:0", "zoom-out:100", "zoom-in:100"] {
            let deformation: Deformation = spec.parse().unwrap();
            assert_eq!(deformation.apply(&set, &mut rng), set, "{spec}");
        }
    }

    #[test]
    fn a_quarter_turn_moves_pixels_where_rotation_says() {
        // Rotating by exactly 90° (U(−90, 90) cannot be pinned, so use the map directly).
        let set = random_set(1, 1, 5);
        let mut out = vec![0u8; 25];
        let theta = std::f64::consts::FRAC_PI_2;
        let (sin, cos) = theta.sin_cos();
        warp(set.image(0), &mut out, 1, 5, [cos, sin, -sin, cos]);
        // Output (x, y) reads source (y, 4 − x) under this inverse map.
        for y in 0..5 {
            for x in 0..5 {
                assert_eq!(out[y * 5 + x], set.image(0)[(4 - x) * 5 + y], "({x}, {y})");
            }
        }
    }

    #[test]
    fn zoom_out_shrinks_content_towards_the_centre_and_draws_are_seeded() {
        let mut set = random_set(1, 1, 11);
        set.pixels.fill(255);
        let zoomed = Deformation::Zoom {
            field_percent: 200.0,
        }
        .apply(&set, &mut ChaCha12Rng::seed_from_u64(0));
        // A 200% field shows the 11-pixel image in about half the width: corners are background.
        assert_eq!(zoomed.image(0)[0], 0);
        assert_eq!(zoomed.image(0)[5 * 11 + 5], 255);
        let set = random_set(4, 1, 8);
        let rotate: Deformation = "rotate:20".parse().unwrap();
        let first = rotate.apply(&set, &mut ChaCha12Rng::seed_from_u64(3));
        let again = rotate.apply(&set, &mut ChaCha12Rng::seed_from_u64(3));
        let other = rotate.apply(&set, &mut ChaCha12Rng::seed_from_u64(4));
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn bad_specs_are_refused_with_their_text() {
        for spec in [
            "rotate",
            "rotate:-5",
            "rotate:1e308",
            "rotate:181",
            "spin:10",
            "shear:95",
            "zoom-out:80",
            "zoom-in:0",
        ] {
            let error = spec.parse::<Deformation>().unwrap_err().to_string();
            assert!(error.contains(spec), "{error}");
        }
        let round: Deformation = "zoom-out:120".parse().unwrap();
        assert_eq!(round.to_string(), "zoom-out:120");
        assert_eq!(round.describe(), "zoom-out 120%");
    }
}
