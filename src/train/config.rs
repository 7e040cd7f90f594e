//! The run's configuration: every choice that shapes a run, resolved once and saved with it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::{DatasetName, SplitConfig};
use crate::eval::EvalSuite;
use crate::mixup::{AlphaSchedule, Loss, MixConfig, MixLoss, MixMode, PatchUpConfig, Switch};
use crate::models::ModelKind;

/// Why a configuration is refused. Options are named by their keys in backquotes
/// (`` `batch-size` ``), which the command line shows as flags (`--batch-size`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A TOML text that is not a set of options (an unknown key, a value of the wrong type).
    #[error("{0}")]
    Toml(String),
    /// An option's value out of its range, or at odds with another option's.
    #[error("`{option}` {requirement}")]
    Invalid {
        /// The option's key.
        option: &'static str,
        /// What its value must be, and what it was; other options named in backquotes.
        requirement: String,
    },
    /// Options given without the one that gives them meaning.
    #[error("`{}` {} `{needed}`", options.join("` and `"), if options.len() == 1 { "needs" } else { "need" })]
    Needs {
        /// The options given.
        options: &'static [&'static str],
        /// The option they need.
        needed: &'static str,
    },
    /// An unknown data set.
    #[error(transparent)]
    Dataset(#[from] crate::data::DataError),
    /// An unknown model or one that cannot be built as configured.
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    /// Mixing options the model cannot take.
    #[error(transparent)]
    Mixing(#[from] crate::mixup::MixupError),
    /// An evaluation suite the model cannot take.
    #[error(transparent)]
    Evaluation(#[from] crate::eval::EvalError),
}

impl ConfigError {
    /// The option refused, where one is.
    pub fn option(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { option, .. } => Some(option),
            ConfigError::Needs { options, .. } => options.first().copied(),
            _ => None,
        }
    }
}

fn invalid(option: &'static str, requirement: String) -> ConfigError {
    ConfigError::Invalid {
        option,
        requirement,
    }
}

/// The largest `--image-size`: a batch of 4096×4096 images already takes gigabytes.
pub const MAX_IMAGE_SIZE: usize = 4_096;

/// Learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// Multiply by the decay factor at each listed epoch.
    Step {
        /// The epochs (from 0) at which the rate drops.
        milestones: Vec<usize>,
    },
    /// Cosine annealing from the base rate to 0 over the run, one rate per epoch.
    Cosine,
    /// Cosine annealing with a new rate at every step, as PyTorch's `CosineAnnealingLR`
    /// stepped after every batch.
    #[serde(rename = "cosine-per-step")]
    CosinePerStep,
}

impl Schedule {
    /// Parses `step:150,225`, `step` (50% and 75% of `epochs`), `cosine` or `cosine-per-step`.
    pub fn parse(text: &str, epochs: usize) -> Result<Self, ConfigError> {
        match text.split_once(':') {
            None if text == "cosine" => Ok(Schedule::Cosine),
            None if text == "cosine-per-step" => Ok(Schedule::CosinePerStep),
            None if text == "step" => Ok(Schedule::default_for(epochs)),
            Some(("step", list)) => {
                let milestones = list
                    .split(',')
                    .map(|m| m.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        invalid(
                            "schedule",
                            format!("'{text}': milestones must be epochs, e.g. step:150,225"),
                        )
                    })?;
                Ok(Schedule::Step { milestones })
            }
            _ => Err(invalid(
                "schedule",
                format!(
                    "'{text}' is not a schedule: expected step:E1,E2,..., cosine or cosine-per-step"
                ),
            )),
        }
    }

    /// The paper's supervised setup: a drop at 50% and 75% of the epochs. A milestone is never
    /// epoch 0: a one-epoch run would otherwise train at decay² times the rate it was given.
    pub fn default_for(epochs: usize) -> Self {
        Schedule::Step {
            milestones: vec![(epochs / 2).max(1), (epochs * 3 / 4).max(1)],
        }
    }

    /// Learning rate for the (0-based) `epoch`.
    pub fn lr(&self, base: f64, decay: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Step { milestones } => {
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                base * decay.powi(passed as i32)
            }
            Schedule::Cosine | Schedule::CosinePerStep => {
                cosine(base, epoch as f64 / epochs.max(1) as f64)
            }
        }
    }

    /// The rate of batch `batch` of `batches` in `epoch`: [`Schedule::lr`] but for
    /// [`Schedule::CosinePerStep`], which moves at every step.
    pub fn lr_at(
        &self,
        base: f64,
        decay: f64,
        (epoch, epochs): (usize, usize),
        (batch, batches): (usize, usize),
    ) -> f64 {
        match self {
            Schedule::CosinePerStep => {
                let steps = (epochs * batches).max(1);
                cosine(base, (epoch * batches + batch) as f64 / steps as f64)
            }
            _ => self.lr(base, decay, epoch, epochs),
        }
    }
}

/// Cosine annealing from `base` at progress 0 to 0 at progress 1.
fn cosine(base: f64, progress: f64) -> f64 {
    0.5 * base * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// Everything that defines a run: `config.json` holds it, and a resume continues from it.
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The data set.
    pub dataset: DatasetName,
    /// Where to read it, where not the default.
    pub data_dir: Option<PathBuf>,
    /// Target size for image-folder datasets.
    pub image_size: usize,
    /// CIFAR-100 with its 20 coarse labels (older runs saved none: fine labels).
    #[serde(default, alias = "cifar100_labels_coarse")]
    pub cifar100_coarse: bool,
    /// The built-in model.
    pub model: ModelKind,
    /// The name of a model from outside the built-in list, trained through
    /// [`crate::train::Trainer::with_model`]; `model` and `width` are then unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_model: Option<String>,
    /// The model's base width.
    pub width: usize,
    /// The device, or the GPUs of a data-parallel run on one machine.
    pub device: super::Devices,
    /// The mixing mode.
    pub mix: MixMode,
    /// λ ~ Beta(α, α).
    pub alpha: f64,
    /// Eligible mix points (0 is the input).
    pub mix_layers: Vec<usize>,
    /// Relative weights of the mix points; uniform when empty.
    pub layer_weights: Vec<f64>,
    /// λ, and the mix point, box or mask, per example (older runs saved none: per batch).
    #[serde(default)]
    pub per_example: bool,
    /// Probability that a batch is mixed (older runs saved none: every batch).
    #[serde(default = "certain")]
    pub mix_prob: f64,
    /// A second mode for a drawn share of the batches.
    #[serde(default)]
    pub switch: Option<Switch>,
    #[serde(default)]
    /// How α changes over the epochs.
    pub alpha_schedule: AlphaSchedule,
    /// PatchUp's mask, used when `mix` or the switch is patchup.
    #[serde(default)]
    pub patchup: PatchUpConfig,
    /// Partners are drawn within this many contiguous groups of each global batch; a
    /// data-parallel run needs a multiple of its ranks, and one group per rank is mixup as
    /// each rank would do it alone (older runs saved none: the whole batch).
    #[serde(default = "one")]
    pub partner_groups: usize,
    /// The loss against the soft targets.
    pub loss: Loss,
    /// Label smoothing ε applied to the soft targets.
    pub label_smoothing: f64,
    /// Whether a mixed batch's loss replaces the clean one or is added to it (RegMixup);
    /// runs that save none replace.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mix_loss: MixLoss,
    /// RegMixup's weight of the mixed copy's loss (runs that save none: 1).
    #[serde(default = "certain", skip_serializing_if = "is_one")]
    pub mix_weight: f64,
    /// Semi-supervised training on unlabelled images, where the run does it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semi: Option<super::SemiConfig>,
    /// Validation and test splits are measured every this many epochs, and after the last.
    #[serde(default = "one")]
    pub eval_every: usize,
    /// Epochs to train.
    pub epochs: usize,
    /// The global batch size.
    pub batch_size: usize,
    /// The base learning rate.
    pub lr: f64,
    /// SGD momentum (no dampening, as PyTorch).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, added to the gradient.
    pub weight_decay: f64,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// The factor of each drop of the step schedule (PyTorch's `MultiStepLR` gamma; older
    /// runs saved it as `gamma`).
    #[serde(alias = "gamma")]
    pub lr_decay: f64,
    /// The seed of the run's random stream and initial weights.
    pub seed: u64,
    /// The seed of the split into training subset and validation, where it is not the run's
    /// (a subset that stays the same over the seeds of a study, as many PyTorch recipes keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// How the training set is split into training and validation.
    pub split: SplitConfig,
    /// Images are padded with background (zero) pixels to this size on every side equally,
    /// before anything else (PyTorch's `transforms.Pad`, e.g. 28 → 32 for Fashion-MNIST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to: Option<usize>,
    /// Whether the data set's standard augmentation is applied.
    pub augment: bool,
    /// Images per batch when evaluating.
    pub eval_batch_size: usize,
    /// The convolutions' arithmetic (older runs saved none: f32).
    #[serde(default)]
    pub precision: crate::kernels::Precision,
    /// Measured on the test split once training ends (older runs saved none).
    #[serde(default)]
    pub evaluate: EvalSuite,
}

fn certain() -> f64 {
    1.0
}

fn one() -> usize {
    1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_one(value: &f64) -> bool {
    *value == 1.0
}

/// The defaults of every option `mmix train` leaves unset: Manifold Mixup (α = 2) at the
/// model's paper mix points of a small CNN on the embedded Fashion-MNIST subset, 30 epochs of
/// SGD (0.1, Nesterov momentum 0.9, weight decay 1e-4, ×0.1 at 50% and 75%). A library caller
/// changes what it needs with struct update syntax: `TrainConfig { epochs: 5, ..Default::default() }`;
/// `width`, `mix_layers` and `alpha` follow the model and mode only through [`Self::with_model`]
/// and [`Self::with_mix`].
impl Default for TrainConfig {
    fn default() -> Self {
        let model = ModelKind::SmallCnn;
        let mix = MixMode::Manifold;
        let epochs = 30;
        TrainConfig {
            dataset: DatasetName::FashionMnistMini,
            data_dir: None,
            image_size: 32,
            cifar100_coarse: false,
            model,
            custom_model: None,
            width: model.default_width(),
            device: super::Devices::default(),
            mix,
            alpha: default_alpha(mix),
            mix_layers: model.paper_mix_points(),
            layer_weights: Vec::new(),
            per_example: false,
            mix_prob: 1.0,
            switch: None,
            alpha_schedule: AlphaSchedule::default(),
            patchup: PatchUpConfig::default(),
            partner_groups: 1,
            loss: Loss::SoftCe,
            label_smoothing: 0.0,
            mix_loss: MixLoss::Replace,
            mix_weight: 1.0,
            semi: None,
            eval_every: 1,
            epochs,
            batch_size: 100,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            schedule: Schedule::default_for(epochs),
            lr_decay: 0.1,
            seed: 0,
            split_seed: None,
            split: SplitConfig {
                valid_split: 0,
                train_subset: None,
                labels_per_class: None,
            },
            pad_to: None,
            augment: true,
            eval_batch_size: 500,
            precision: crate::kernels::Precision::default(),
            evaluate: EvalSuite::default(),
        }
    }
}

/// The α a mode is used with when none is given: 1 for input mixup and CutMix (their papers'
/// choice), 2 for the rest (Manifold Mixup's).
pub fn default_alpha(mode: MixMode) -> f64 {
    match mode {
        MixMode::Input | MixMode::Cutmix => 1.0,
        _ => 2.0,
    }
}

impl TrainConfig {
    /// `model` at its default width and paper mix points.
    pub fn with_model(self, model: ModelKind) -> Self {
        TrainConfig {
            model,
            width: model.default_width(),
            mix_layers: model.paper_mix_points(),
            ..self
        }
    }

    /// `mix` at its default α.
    pub fn with_mix(self, mix: MixMode) -> Self {
        TrainConfig {
            mix,
            alpha: default_alpha(mix),
            ..self
        }
    }

    /// `epochs`, with the default schedule's milestones moved with them where the schedule
    /// is the default one.
    pub fn with_epochs(self, epochs: usize) -> Self {
        let schedule = match self.schedule == Schedule::default_for(self.epochs) {
            true => Schedule::default_for(epochs),
            false => self.schedule,
        };
        TrainConfig {
            epochs,
            schedule,
            ..self
        }
    }
}

impl TrainConfig {
    /// The model's name in reports.
    pub fn model_name(&self) -> String {
        self.custom_model
            .clone()
            .unwrap_or_else(|| self.model.to_string())
    }

    /// The mixing this run does.
    pub fn mix_config(&self) -> MixConfig {
        MixConfig {
            mode: self.mix,
            alpha: self.alpha,
            mix_points: self.mix_layers.clone(),
            layer_weights: self.layer_weights.clone(),
            per_example: self.per_example,
            apply_prob: self.mix_prob,
            switch: self.switch,
            schedule: self.alpha_schedule,
            patchup: self.patchup,
            partner_groups: self.partner_groups,
        }
    }

    /// What each step minimises.
    pub fn objective(&self) -> super::Objective {
        super::Objective {
            loss: self.loss,
            label_smoothing: self.label_smoothing,
            mix_loss: self.mix_loss,
            mix_weight: self.mix_weight,
        }
    }

    /// How the run mixes, in a few words: `manifold α=2` plus whatever differs from the
    /// defaults (`per-example`, `p=0.5`, `↔cutmix:0.5 α=1`, `ramp:5`, `patchup hard b5 γ0.7`).
    pub fn mix_label(&self) -> String {
        self.describe_mix(true)
    }

    /// [`TrainConfig::mix_label`] without the first mode's α, for tables with a column of it.
    pub fn mix_variant(&self) -> String {
        self.describe_mix(false)
    }

    fn describe_mix(&self, with_alpha: bool) -> String {
        let supervised = self.describe_supervised_mix(with_alpha);
        match &self.semi {
            Some(semi) => format!("{supervised} + {}", semi.label()),
            None => supervised,
        }
    }

    fn describe_supervised_mix(&self, with_alpha: bool) -> String {
        if self.mix == MixMode::None {
            return "none".into();
        }
        let mut parts = vec![match with_alpha {
            true => format!("{} α={}", self.mix, self.alpha),
            false => self.mix.to_string(),
        }];
        let uses_patchup =
            self.mix == MixMode::Patchup || self.switch.is_some_and(|s| s.mode == MixMode::Patchup);
        if uses_patchup && self.patchup != PatchUpConfig::default() {
            let p = &self.patchup;
            parts.push(format!("{} b{} γ{}", p.kind, p.block, p.gamma));
        }
        if self.per_example {
            parts.push("per-example".into());
        }
        if self.mix_prob < 1.0 {
            parts.push(format!("p={}", self.mix_prob));
        }
        if let Some(switch) = &self.switch {
            parts.push(format!(
                "↔{}:{} α={}",
                switch.mode, switch.prob, switch.alpha
            ));
        }
        if self.alpha_schedule != AlphaSchedule::Constant {
            parts.push(self.alpha_schedule.to_string());
        }
        if self.partner_groups > 1 {
            parts.push(format!("groups={}", self.partner_groups));
        }
        match (self.mix_loss, self.mix_weight) {
            (MixLoss::Replace, _) => {}
            (MixLoss::Regmixup, 1.0) => parts.push("regmixup".into()),
            (MixLoss::Regmixup, weight) => parts.push(format!("regmixup w={weight}")),
        }
        parts.join(" ")
    }

    /// Whether the splits are measured after `epoch` (1-based).
    pub fn evaluates_after(&self, epoch: usize) -> bool {
        epoch.is_multiple_of(self.eval_every.max(1)) || epoch == self.epochs
    }

    /// Checks what the types cannot: the same checks for flags, a TOML file, a study's
    /// arm and a saved `config.json`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("epochs", Some(self.epochs)),
            ("eval-every", Some(self.eval_every)),
            ("batch-size", Some(self.batch_size)),
            ("eval-batch-size", Some(self.eval_batch_size)),
            ("partner-groups", Some(self.partner_groups)),
            ("width", Some(self.width)),
            ("image-size", Some(self.image_size)),
            ("train-subset", self.split.train_subset),
            ("labels-per-class", self.split.labels_per_class),
            ("pad-to", self.pad_to),
        ];
        if let Some((option, _)) = positive.iter().find(|(_, v)| *v == Some(0)) {
            return Err(invalid(option, "must be at least 1".into()));
        }
        let too_large = |got: usize| {
            format!(
                "must be at most {MAX_IMAGE_SIZE} (got {got}): larger images would not fit a training batch in memory"
            )
        };
        if self.image_size > MAX_IMAGE_SIZE {
            return Err(invalid("image-size", too_large(self.image_size)));
        }
        if let Some(size) = self.pad_to.filter(|&size| size > MAX_IMAGE_SIZE) {
            return Err(invalid("pad-to", too_large(size)));
        }
        if self.partner_groups > self.batch_size {
            return Err(invalid(
                "batch-size",
                format!(
                    "({}) is smaller than `partner-groups` ({}, by default one per rank): each group needs an example",
                    self.batch_size, self.partner_groups
                ),
            ));
        }
        if self.cifar100_coarse && self.dataset != DatasetName::Cifar100 {
            return Err(invalid(
                "cifar100-coarse",
                format!("applies to `dataset` cifar100, not {}", self.dataset),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(
                "lr",
                format!("must be a positive number, got {}", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid(
                "momentum",
                format!("must be in [0, 1), got {}", self.momentum),
            ));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(invalid("nesterov", "needs a non-zero `momentum`".into()));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid(
                "weight-decay",
                format!("must be ≥ 0, got {}", self.weight_decay),
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(invalid(
                "label-smoothing",
                format!("must be in [0, 1), got {}", self.label_smoothing),
            ));
        }
        if !(self.mix_weight.is_finite() && self.mix_weight >= 0.0) {
            return Err(invalid(
                "mix-weight",
                format!("must be a number ≥ 0, got {}", self.mix_weight),
            ));
        }
        match self.mix_loss {
            MixLoss::Regmixup if self.mix == MixMode::None => {
                return Err(invalid(
                    "mix-loss",
                    "regmixup adds a mixed copy's loss: it needs a `mix` other than none".into(),
                ));
            }
            MixLoss::Replace if self.mix_weight != 1.0 => {
                return Err(invalid(
                    "mix-weight",
                    "applies to `mix-loss` regmixup only".into(),
                ));
            }
            _ => {}
        }
        if let Some(semi) = &self.semi {
            self.validate_semi(semi)?;
        }
        let folders = [
            ("data-dir", self.data_dir.as_deref()),
            (
                "unlabeled-dir",
                match self.semi.as_ref().map(|semi| &semi.unlabeled) {
                    Some(super::UnlabeledPool::Folder(dir)) => Some(dir.as_path()),
                    _ => None,
                },
            ),
        ];
        for (option, dir) in folders {
            if let Some(dir) = dir.filter(|dir| dir.to_str().is_none()) {
                return Err(invalid(
                    option,
                    format!(
                        "must be UTF-8 text, as config.json records it: {} is not (rename the folder or link to it under a UTF-8 name)",
                        crate::fsio::path_text(dir)
                    ),
                ));
            }
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0) {
            return Err(invalid(
                "lr-decay",
                format!("must be positive, got {}", self.lr_decay),
            ));
        }
        if self.custom_model.is_none() {
            // A model registered by a library user declares its points when it is built.
            let points = self.model.mix_points();
            self.mix_config().validate(&points, self.epochs)?;
            self.evaluate.validate(points.len() - 1)?;
        }
        Ok(())
    }
}

impl TrainConfig {
    fn validate_semi(&self, semi: &super::SemiConfig) -> Result<(), ConfigError> {
        if !matches!(semi.mix, MixMode::Input | MixMode::Manifold) {
            return Err(invalid(
                "semi-mix",
                format!("must be input or manifold, got {}", semi.mix),
            ));
        }
        let non_negative = [
            ("semi-alpha", semi.alpha),
            ("consistency", semi.consistency),
            ("consistency-rampup", semi.rampup_epochs),
        ];
        if let Some((option, value)) = non_negative
            .into_iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            return Err(invalid(
                option,
                format!("must be a number ≥ 0, got {value}"),
            ));
        }
        if !(0.0..1.0).contains(&semi.ema_decay) {
            return Err(invalid(
                "ema-decay",
                format!("must be in [0, 1), got {}", semi.ema_decay),
            ));
        }
        if semi.batch_size == 0 {
            return Err(invalid("unlabeled-batch-size", "must be at least 1".into()));
        }
        if self.custom_model.is_none() {
            let points = self.model.mix_points();
            semi.mix_config(&self.mix_layers)
                .validate(&points, self.epochs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let step = Schedule::parse("step:2,4", 6).unwrap();
        let lrs: Vec<f64> = (0..6).map(|e| step.lr(0.1, 0.1, e, 6)).collect();
        for (got, want) in lrs.iter().zip([0.1, 0.1, 0.01, 0.01, 0.001, 0.001]) {
            assert!((got - want).abs() < 1e-12, "{lrs:?}");
        }
        assert_eq!(
            Schedule::default_for(200),
            Schedule::Step {
                milestones: vec![100, 150]
            }
        );
        for epochs in 1..=3 {
            let default = Schedule::default_for(epochs);
            assert_eq!(default.lr(0.1, 0.1, 0, epochs), 0.1, "{default:?}");
        }
        let cosine = Schedule::parse("cosine", 10).unwrap();
        assert_eq!(cosine.lr(0.1, 0.1, 0, 10), 0.1);
        assert!((cosine.lr(0.1, 0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!(Schedule::parse("step:a", 10).is_err());
        assert!(Schedule::parse("linear", 10).is_err());
    }

    #[test]
    fn per_step_cosine_moves_every_step_and_matches_the_epoch_rate_at_epoch_starts() {
        let (per_step, per_epoch) = (
            Schedule::parse("cosine-per-step", 4).unwrap(),
            Schedule::Cosine,
        );
        let rates: Vec<f64> = (0..4)
            .flat_map(|epoch| (0..5).map(move |batch| (epoch, batch)))
            .map(|(epoch, batch)| per_step.lr_at(0.1, 0.1, (epoch, 4), (batch, 5)))
            .collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
        // PyTorch's CosineAnnealingLR(T_max = 20) stepped after each batch: step 10 of 20 is half.
        assert!((rates[10] - 0.05).abs() < 1e-12);
        assert!(rates[19] > 0.0 && rates[19] < 1e-3);
        for epoch in 0..4 {
            let start = per_step.lr_at(0.1, 0.1, (epoch, 4), (0, 5));
            assert!((start - per_epoch.lr(0.1, 0.1, epoch, 4)).abs() < 1e-15);
            // The per-epoch schedule stays one rate through its epoch.
            let inside = per_epoch.lr_at(0.1, 0.1, (epoch, 4), (3, 5));
            assert_eq!(inside, per_epoch.lr(0.1, 0.1, epoch, 4));
        }
    }
}
