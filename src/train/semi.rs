//! Semi-supervised training on the images a run holds no labels for: Interpolation
//! Consistency Training (ICT), at the input or at a drawn hidden point. What it adds to a run:
//! its options ([`SemiConfig`]), its own stream of unlabelled batches ([`SemiState`], saved
//! with every checkpoint), and the consistency term of each step.

use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use crate::mixup::{MixConfig, MixMode, MixPlan, sigmoid_rampup};

/// A semi-supervised method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SemiMethod {
    /// Interpolation Consistency Training: the student's prediction at a mix of two
    /// unlabelled images should be the same mix of a mean teacher's predictions.
    Ict,
}

impl std::fmt::Display for SemiMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ict")
    }
}

/// Which images a semi-supervised run takes as unlabelled: every training image the labelled
/// split left out (after the validation hold-out), a seeded count of them, or the images of a
/// folder (`--unlabeled-dir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnlabeledPool {
    /// All of them.
    Rest,
    /// This many, drawn uniformly with the split's seed.
    Count(usize),
    /// The PNG and JPEG images directly in this folder, read at the dataset's size and
    /// channels.
    Folder(PathBuf),
}

impl std::str::FromStr for UnlabeledPool {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "rest" => Ok(UnlabeledPool::Rest),
            count => match count.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "'{text}' is not an unlabelled pool: rest, or a count of at least 1"
                )),
                Ok(n) => Ok(UnlabeledPool::Count(n)),
            },
        }
    }
}

impl std::fmt::Display for UnlabeledPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnlabeledPool::Rest => f.write_str("rest"),
            UnlabeledPool::Count(n) => write!(f, "{n}"),
            UnlabeledPool::Folder(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// How a pool is written: `"rest"`, a count, or `{"dir": …}` for a folder (so that no folder
/// name can read as a count).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WrittenPool {
    Count(usize),
    Text(String),
    Folder { dir: PathBuf },
}

impl Serialize for UnlabeledPool {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            UnlabeledPool::Folder(dir) => WrittenPool::Folder { dir: dir.clone() },
            pool => WrittenPool::Text(pool.to_string()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UnlabeledPool {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match WrittenPool::deserialize(deserializer)? {
            WrittenPool::Count(n) => n.to_string().parse(),
            WrittenPool::Text(text) => text.parse(),
            WrittenPool::Folder { dir } => Ok(UnlabeledPool::Folder(dir)),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// ICT's mix of an unlabelled pair, per batch with λ ~ Beta(α, α): at the input (`input`), or
/// at a point drawn from `mix_points` (`manifold`, the hidden-space version).
pub fn unlabeled_mix(mode: MixMode, alpha: f64, mix_points: &[usize]) -> MixConfig {
    let points = match mode {
        MixMode::Input => vec![0],
        _ => mix_points.to_vec(),
    };
    MixConfig::new(mode, alpha, points)
}

/// A semi-supervised run's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SemiConfig {
    /// The method.
    pub method: SemiMethod,
    /// The unlabelled images.
    pub unlabeled: UnlabeledPool,
    /// Where the unlabelled pair is mixed: `input` (ICT) or `manifold` (at a point drawn from
    /// the run's mix layers, ICT's hidden-space version).
    pub mix: MixMode,
    /// λ ~ Beta(α, α) of the unlabelled mix.
    pub alpha: f64,
    /// The consistency term's weight once ramped up.
    pub consistency: f64,
    /// Epochs over which the weight ramps up (sigmoid-shaped, from exp(−5) of its value).
    pub rampup_epochs: f64,
    /// The teacher's moving-average decay.
    pub ema_decay: f64,
    /// Unlabelled images per step (the whole global batch, over all ranks).
    pub batch_size: usize,
}

impl SemiConfig {
    /// The unlabelled mix: per batch, at the input or a point drawn from `mix_points`.
    pub fn mix_config(&self, mix_points: &[usize]) -> MixConfig {
        unlabeled_mix(self.mix, self.alpha, mix_points)
    }

    /// The consistency weight at step `batch` of `batches` in `epoch` (from 0): the ramp
    /// reads the fractional epoch, as the reference code does.
    pub fn weight_at(&self, epoch: usize, (batch, batches): (usize, usize)) -> f64 {
        let progress = epoch as f64 + batch as f64 / batches.max(1) as f64;
        self.consistency * sigmoid_rampup(progress, self.rampup_epochs)
    }

    /// In a few words, for labels: `ict input α=1 w=100`.
    pub fn label(&self) -> String {
        format!(
            "{} {} α={} w={}",
            self.method, self.mix, self.alpha, self.consistency
        )
    }
}

/// The unlabelled stream: its own random stream of the run's seed (so the labelled stream
/// draws what it would draw without it), an order over the pool that is drawn afresh each time
/// it is used up, and the teacher's update count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SemiState {
    /// The stream's random generator, where the next draw continues.
    pub rng: ChaCha12Rng,
    /// The current pass's order of the pool.
    pub order: Vec<usize>,
    /// The next position in it.
    pub next: usize,
    /// Teacher updates so far (one per optimizer step).
    pub teacher_updates: u64,
}

/// The stream id of the unlabelled stream (the split's is 1, the run's own 0).
const UNLABELED_STREAM: u64 = 2;

/// One unlabelled batch's draws: the pool's images it holds, and its mix.
pub struct UnlabeledDraw {
    /// Indices into the pool.
    pub indices: Vec<usize>,
    /// Their augmentation.
    pub placements: Vec<crate::data::Placement>,
    /// The mix of the batch.
    pub plan: Option<MixPlan>,
}

impl SemiState {
    /// The stream of a fresh run of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        rng.set_stream(UNLABELED_STREAM);
        Self {
            rng,
            order: Vec::new(),
            next: 0,
            teacher_updates: 0,
        }
    }

    /// The next `count` images of a pool of `pool` images (a pass that runs out continues
    /// into a freshly drawn one), their augmentation and their mix.
    pub fn draw(
        &mut self,
        pool: usize,
        count: usize,
        augmentation: &crate::data::Augmentation,
        mix: &MixConfig,
    ) -> UnlabeledDraw {
        let mut indices = Vec::with_capacity(count);
        while indices.len() < count {
            if self.next >= self.order.len() {
                self.order = (0..pool).collect();
                self.order.shuffle(&mut self.rng);
                self.next = 0;
            }
            let take = (count - indices.len()).min(self.order.len() - self.next);
            indices.extend_from_slice(&self.order[self.next..self.next + take]);
            self.next += take;
        }
        let placements = augmentation.placements(count, &mut self.rng);
        let plan = mix.draw(&mut self.rng, count, 0, 1);
        UnlabeledDraw {
            indices,
            placements,
            plan,
        }
    }

    /// What a loaded state must hold for the stream to continue from it.
    pub(crate) fn check(&self, pool: usize) -> Result<(), String> {
        let mut seen = vec![false; pool];
        for &i in &self.order {
            if i >= pool || std::mem::replace(&mut seen[i], true) {
                return Err(format!(
                    "its unlabelled order is not a permutation of the run's {pool} unlabelled images"
                ));
            }
        }
        if self.next > self.order.len() {
            return Err("its unlabelled position is past its order".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Augmentation;

    #[test]
    fn the_stream_covers_the_pool_once_per_pass_and_continues_across_passes() {
        let mut state = SemiState::new(3);
        let mix = MixConfig::new(MixMode::Input, 1.0, vec![0]);
        let none = Augmentation::none();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.extend(state.draw(10, 4, &none, &mix).indices);
        }
        let mut first: Vec<usize> = seen[..10].to_vec();
        first.sort_unstable();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        let mut second: Vec<usize> = seen[10..20].to_vec();
        second.sort_unstable();
        assert_eq!(second, (0..10).collect::<Vec<_>>());
        assert_ne!(seen[..10], seen[10..20], "each pass draws its own order");
        // The same seed draws the same stream; a saved state continues it exactly.
        let mut again = SemiState::new(3);
        let head: Vec<usize> = (0..2)
            .flat_map(|_| again.draw(10, 4, &none, &mix).indices)
            .collect();
        let saved: SemiState =
            serde_json::from_str(&serde_json::to_string(&again).unwrap()).unwrap();
        let mut resumed = saved;
        let tail: Vec<usize> = (0..3)
            .flat_map(|_| resumed.draw(10, 4, &none, &mix).indices)
            .collect();
        assert_eq!([head, tail].concat(), seen);
    }

    #[test]
    fn pools_parse_and_print_as_written() {
        for text in ["rest", "1", "5000"] {
            let pool: UnlabeledPool = text.parse().unwrap();
            assert_eq!(pool.to_string(), text);
            let json = serde_json::to_string(&pool).unwrap();
            assert_eq!(serde_json::from_str::<UnlabeledPool>(&json).unwrap(), pool);
        }
        assert_eq!(
            toml::from_str::<std::collections::BTreeMap<String, UnlabeledPool>>("u = 300").unwrap()
                ["u"],
            UnlabeledPool::Count(300)
        );
        for bad in ["0", "all", "-3", ""] {
            assert!(bad.parse::<UnlabeledPool>().is_err(), "{bad}");
        }
        // A folder whose name reads as a count stays a folder.
        let folder = UnlabeledPool::Folder("300".into());
        let json = serde_json::to_string(&folder).unwrap();
        assert_eq!(json, r#"{"dir":"300"}"#);
        assert_eq!(
            serde_json::from_str::<UnlabeledPool>(&json).unwrap(),
            folder
        );
    }

    #[test]
    fn the_weight_ramps_over_fractional_epochs_to_the_consistency() {
        let config = SemiConfig {
            method: SemiMethod::Ict,
            unlabeled: UnlabeledPool::Rest,
            mix: MixMode::Input,
            alpha: 1.0,
            consistency: 100.0,
            rampup_epochs: 4.0,
            ema_decay: 0.999,
            batch_size: 10,
        };
        let at = |epoch, batch| config.weight_at(epoch, (batch, 10));
        assert!((at(0, 0) - 100.0 * (-5.0f64).exp()).abs() < 1e-12);
        assert!((at(2, 0) - 100.0 * (-1.25f64).exp()).abs() < 1e-12);
        assert!((at(1, 5) - 100.0 * (-5.0 * 0.625f64 * 0.625).exp()).abs() < 1e-12);
        assert_eq!(at(4, 0), 100.0);
        assert_eq!(at(9, 3), 100.0);
    }
}
