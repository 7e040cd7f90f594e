//! The options of a run as a person gives them: flags of `mmix train`, keys of a `--config`
//! TOML file or of a study's tables. Every option is optional; [`TrainOptions::resolve`] fills
//! in the library's defaults, checks the result and returns the [`TrainConfig`] a run saves.

// These comments are also `--help` text: brackets are optional parts and <x> placeholders,
// not links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use serde::Deserialize;

use crate::data::{DatasetName, SplitConfig};
use crate::eval::{Attack, Deformation, EvalSuite};
use crate::mixup::{AlphaSchedule, Loss, MixLoss, MixMode, PatchUpConfig, PatchUpKind, Switch};
use crate::models::ModelKind;

use super::config::{ConfigError, Schedule, TrainConfig, default_alpha};
use super::semi::{SemiConfig, SemiMethod, UnlabeledPool};

/// Every option of a run, each unset unless given: the flags of `mmix train` (clap) and the
/// keys of a TOML file (serde, kebab-case).
#[derive(clap::Args, Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainOptions {
    /// fashion-mnist-mini (embedded), fashion-mnist, mnist, cifar10, cifar100 or folder.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Dataset folder (default: $MMIX_DATA/<dataset>, or Debian's for fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image size for folder datasets.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Pad every image with background pixels to this size (e.g. 32 for Fashion-MNIST's
    /// 28×28, as PyTorch recipes that pad before the network do).
    #[arg(long)]
    pub pad_to: Option<usize>,
    /// f32 (default), or bf16: convolutions on oneDNN read bf16 operands and accumulate in
    /// f32; master weights, batch norm, the mix, the loss and SGD stay f32.
    #[arg(long, value_enum)]
    pub precision: Option<crate::kernels::Precision>,
    /// CIFAR-100's 20 coarse (superclass) labels instead of its 100 fine ones.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cifar100_coarse: Option<bool>,
    /// preactresnet18|34|50|101|152, wrn-<depth>-<k>, resnet50, small-cnn or mlp.
    #[arg(long)]
    pub model: Option<String>,
    /// Base width (default: the model's own).
    #[arg(long)]
    pub width: Option<usize>,
    /// cpu, cuda[:N] or wgpu[:N]; a comma-separated list (`--devices cuda:0,cuda:1`) trains
    /// data-parallel on each of them, one thread each.
    #[arg(long, alias = "devices")]
    pub device: Option<super::Devices>,
    /// How to mix (default manifold): none; input (mixup); manifold (at a mix point drawn
    /// per batch); cutmix (a box from the partner image, λ corrected to the kept area);
    /// patchup (blocks of a hidden map at a drawn point); output (the logits).
    #[arg(long, value_enum)]
    pub mix: Option<MixMode>,
    /// Beta(α, α) parameter (default 1.0 for input mixup and cutmix, 2.0 otherwise).
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    /// Eligible mix points of manifold and patchup, e.g. 0,1,2 (default: the model's paper set).
    #[arg(long, value_delimiter = ',')]
    pub mix_layers: Option<Vec<usize>>,
    /// Relative weights for drawing the mix point, one per --mix-layers entry.
    #[arg(long, value_delimiter = ',')]
    pub layer_weights: Option<Vec<f64>>,
    /// λ per example instead of per batch, and with it the mix point (manifold, patchup),
    /// box (cutmix) or mask (patchup).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub per_example: Option<bool>,
    /// Partners are drawn within this many contiguous groups of each batch (default: the
    /// number of data-parallel ranks, 1 alone); a multiple of the ranks under mpirun.
    #[arg(long)]
    pub partner_groups: Option<usize>,
    /// Probability that a batch is mixed at all, in [0, 1] (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub mix_prob: Option<f64>,
    /// A second mode used instead of --mix on a drawn share of the batches (--switch-prob).
    #[arg(long, value_enum)]
    pub switch_to: Option<MixMode>,
    /// Probability that a batch uses --switch-to, in [0, 1] (default 0.5).
    #[arg(long, allow_negative_numbers = true)]
    pub switch_prob: Option<f64>,
    /// Beta(α, α) parameter of --switch-to (default: --alpha).
    #[arg(long, allow_negative_numbers = true)]
    pub switch_alpha: Option<f64>,
    /// constant, ramp:E (α·(e+1)/E over the first E epochs) or off-last:N (no mixing in
    /// the last N epochs) (default constant).
    #[arg(long)]
    pub alpha_schedule: Option<AlphaSchedule>,
    /// PatchUp: soft (interpolate the blocks) or hard (swap them) (default soft).
    #[arg(long, value_enum)]
    pub patchup_kind: Option<PatchUpKind>,
    /// PatchUp: side of the square blocks, odd (default 7).
    #[arg(long)]
    pub patchup_block: Option<usize>,
    /// PatchUp: probability that a feature is altered, in [0, 1] (default 0.9).
    #[arg(long, allow_negative_numbers = true)]
    pub patchup_gamma: Option<f64>,
    /// Training loss on the (mixed) soft targets (default soft-ce).
    #[arg(long, value_enum)]
    pub loss: Option<Loss>,
    /// Label smoothing applied to the mixed targets, in [0, 1) (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f64>,
    /// replace (default): a mixed batch's loss is the loss; regmixup: the clean batch's loss
    /// plus --mix-weight × a mixed copy's (two forward passes; RegMixup uses a large α, 10-20).
    #[arg(long, value_enum)]
    pub mix_loss: Option<MixLoss>,
    /// RegMixup's weight of the mixed copy's loss, ≥ 0 (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub mix_weight: Option<f64>,
    /// Semi-supervised training on unlabelled images: ict (Interpolation Consistency Training,
    /// with a mean teacher). Needs --unlabeled.
    #[arg(long, value_enum)]
    pub semi: Option<SemiMethod>,
    /// The unlabelled images of --semi: rest (every training image the labelled split leaves
    /// out, after validation) or a count of them, drawn with the split's seed.
    #[arg(long)]
    pub unlabeled: Option<UnlabeledPool>,
    /// The unlabelled images of --semi from a folder instead: the PNG and JPEG files directly
    /// in it, read at the dataset's image size and channels.
    #[arg(long, value_name = "DIR")]
    pub unlabeled_dir: Option<PathBuf>,
    /// Where --semi mixes the unlabelled pair: input (ICT) or manifold (at a point drawn from
    /// --mix-layers) (default input).
    #[arg(long, value_enum)]
    pub semi_mix: Option<MixMode>,
    /// Beta(α, α) parameter of the unlabelled mix (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub semi_alpha: Option<f64>,
    /// Weight of the consistency term once ramped up (default 100, ICT's).
    #[arg(long, allow_negative_numbers = true)]
    pub consistency: Option<f64>,
    /// Epochs over which the consistency weight ramps up, sigmoid-shaped (default a quarter of
    /// --epochs, as ICT's experiments).
    #[arg(long, allow_negative_numbers = true)]
    pub consistency_rampup: Option<f64>,
    /// Decay of the mean teacher's moving average, in [0, 1) (default 0.999).
    #[arg(long, allow_negative_numbers = true)]
    pub ema_decay: Option<f64>,
    /// Unlabelled images per step (default --batch-size).
    #[arg(long)]
    pub unlabeled_batch_size: Option<usize>,
    /// Passes over the training split (default 30).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Measure the validation and test splits every N epochs, and after the last (default 1).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Examples per step (default 100).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Examples per forward pass when measuring a split (default 500); lower it where the
    /// evaluation of large images does not fit in memory. Changes no result.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Base learning rate of SGD (default 0.1).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// SGD momentum, without dampening as in PyTorch (default 0.9).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Nesterov momentum (default true); `--nesterov false` turns it off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub nesterov: Option<bool>,
    /// L2 weight decay added to the gradient (default 1e-4).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// step:E1,E2,..., cosine or cosine-per-step (default: step at 50% and 75% of the epochs).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Factor of each drop of the step schedule, PyTorch's `MultiStepLR` gamma (default 0.1).
    #[arg(long, alias = "gamma", allow_negative_numbers = true)]
    #[serde(alias = "gamma")]
    pub lr_decay: Option<f64>,
    /// Seeds the split, initial weights, shuffling, augmentation, λ, mix layer and partners
    /// (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seeds the split into training subset and validation alone (default: --seed), so that
    /// runs of several seeds train on the same subset.
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// Keep this many training examples (stratified).
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Keep this many training examples per class.
    #[arg(long)]
    pub labels_per_class: Option<usize>,
    /// Hold this many training examples out for validation (stratified).
    #[arg(long)]
    pub valid_split: Option<usize>,
    /// Turn off random crops and flips.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub no_augment: Option<bool>,
    /// After training, accuracy under a white-box attack on the test split: fgsm:EPS or
    /// pgd:EPS:STEPS[:STEP_SIZE], ε in [0, 1] pixel units (repeatable).
    #[arg(long = "attack")]
    #[serde(rename = "attack")]
    pub attacks: Option<Vec<Attack>>,
    /// Attack only the first N test examples.
    #[arg(long)]
    pub attack_examples: Option<usize>,
    /// After training, metrics on a deformed test split: rotate:DEG, shear:DEG,
    /// zoom-out:PERCENT or zoom-in:PERCENT, seeded (repeatable).
    #[arg(long = "deform")]
    #[serde(rename = "deform")]
    pub deformations: Option<Vec<Deformation>>,
    /// After training, the spectrum of the class-conditional representations at this mix point.
    #[arg(long)]
    pub spectrum_at: Option<usize>,
    /// Run folder (default: runs/<model>-<dataset>-<mix>-s<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A whole evaluation suite, in place of the attack, deformation and spectrum options
    /// (what a study passes).
    #[arg(skip)]
    #[serde(skip)]
    pub suite: Option<EvalSuite>,
}

impl TrainOptions {
    /// The options of a TOML file's text: the same keys as the flags, kebab-case.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().trim_end().to_string()))
    }

    /// The run these options describe, for a launch of `launch_ranks` processes (1 without
    /// a launcher): what they leave unset takes the library's defaults
    /// ([`TrainConfig::default`]), the model's width and paper mix points, and the mode's α.
    pub fn resolve(&self, launch_ranks: usize) -> Result<TrainConfig, ConfigError> {
        self.resolve_over(&TrainOptions::default(), launch_ranks)
    }

    /// [`TrainOptions::resolve`] with `fallback` (a `--config` file's options) giving what
    /// these leave unset. Reads nothing of the process: a run's partners are drawn within
    /// each rank's rows by default, so the caller passes the launch's rank count.
    pub fn resolve_over(
        &self,
        fallback: &TrainOptions,
        launch_ranks: usize,
    ) -> Result<TrainConfig, ConfigError> {
        macro_rules! pick {
            ($field:ident) => {
                self.$field.clone().or(fallback.$field.clone())
            };
        }
        let defaults = TrainConfig::default();
        let dataset: DatasetName = match pick!(dataset) {
            Some(name) => name.parse()?,
            None => defaults.dataset,
        };
        let model: ModelKind = match pick!(model) {
            Some(name) => name.parse()?,
            None => defaults.model,
        };
        let mix = pick!(mix).unwrap_or(defaults.mix);
        let epochs = pick!(epochs).unwrap_or(defaults.epochs);
        let schedule = match pick!(schedule) {
            Some(text) => Schedule::parse(&text, epochs)?,
            None => Schedule::default_for(epochs),
        };
        let alpha = pick!(alpha).unwrap_or(default_alpha(mix));
        let switch = match pick!(switch_to) {
            Some(mode) => Some(Switch {
                mode,
                prob: pick!(switch_prob).unwrap_or(0.5),
                alpha: pick!(switch_alpha).unwrap_or(alpha),
            }),
            None if pick!(switch_prob).is_some() || pick!(switch_alpha).is_some() => {
                return Err(ConfigError::Needs {
                    options: &["switch-prob", "switch-alpha"],
                    needed: "switch-to",
                });
            }
            None => None,
        };
        let patchup = PatchUpConfig {
            block: pick!(patchup_block).unwrap_or(defaults.patchup.block),
            gamma: pick!(patchup_gamma).unwrap_or(defaults.patchup.gamma),
            kind: pick!(patchup_kind).unwrap_or(defaults.patchup.kind),
        };
        let batch_size = pick!(batch_size).unwrap_or(defaults.batch_size);
        let semi = self.semi_over(fallback, epochs, batch_size)?;
        let devices = pick!(device).map_or(1, |list| list.len());
        let config = TrainConfig {
            dataset,
            data_dir: pick!(data_dir),
            image_size: pick!(image_size).unwrap_or(defaults.image_size),
            cifar100_coarse: pick!(cifar100_coarse).unwrap_or(defaults.cifar100_coarse),
            model,
            custom_model: None,
            width: pick!(width).unwrap_or_else(|| model.default_width()),
            device: pick!(device).unwrap_or(defaults.device),
            mix,
            alpha,
            mix_layers: pick!(mix_layers).unwrap_or_else(|| model.paper_mix_points()),
            layer_weights: pick!(layer_weights).unwrap_or(defaults.layer_weights),
            per_example: pick!(per_example).unwrap_or(defaults.per_example),
            mix_prob: pick!(mix_prob).unwrap_or(defaults.mix_prob),
            switch,
            alpha_schedule: pick!(alpha_schedule).unwrap_or(defaults.alpha_schedule),
            patchup,
            // Every rank of the launch, and every device it lists, mixes within its own rows.
            partner_groups: pick!(partner_groups).unwrap_or(launch_ranks * devices),
            loss: pick!(loss).unwrap_or(defaults.loss),
            label_smoothing: pick!(label_smoothing).unwrap_or(defaults.label_smoothing),
            mix_loss: pick!(mix_loss).unwrap_or(defaults.mix_loss),
            mix_weight: pick!(mix_weight).unwrap_or(defaults.mix_weight),
            semi,
            epochs,
            eval_every: pick!(eval_every).unwrap_or(defaults.eval_every),
            batch_size,
            lr: pick!(lr).unwrap_or(defaults.lr),
            momentum: pick!(momentum).unwrap_or(defaults.momentum),
            nesterov: pick!(nesterov).unwrap_or(defaults.nesterov),
            weight_decay: pick!(weight_decay).unwrap_or(defaults.weight_decay),
            schedule,
            lr_decay: pick!(lr_decay).unwrap_or(defaults.lr_decay),
            seed: pick!(seed).unwrap_or(defaults.seed),
            split_seed: pick!(split_seed),
            pad_to: pick!(pad_to),
            split: SplitConfig {
                valid_split: pick!(valid_split).unwrap_or(defaults.split.valid_split),
                train_subset: pick!(train_subset),
                labels_per_class: pick!(labels_per_class),
            },
            augment: !pick!(no_augment).unwrap_or(!defaults.augment),
            eval_batch_size: pick!(eval_batch_size).unwrap_or(defaults.eval_batch_size),
            precision: pick!(precision).unwrap_or(defaults.precision),
            evaluate: self.suite.clone().unwrap_or_else(|| EvalSuite {
                attacks: pick!(attacks).unwrap_or_default(),
                attack_examples: pick!(attack_examples),
                deformations: pick!(deformations).unwrap_or_default(),
                spectrum_at: pick!(spectrum_at),
                ..EvalSuite::default()
            }),
        };
        config.validate()?;
        Ok(config)
    }

    /// The semi-supervised options, over `fallback`'s: none without `semi`, and then none of
    /// its options may be given either.
    fn semi_over(
        &self,
        fallback: &TrainOptions,
        epochs: usize,
        batch_size: usize,
    ) -> Result<Option<SemiConfig>, ConfigError> {
        macro_rules! pick {
            ($field:ident) => {
                self.$field.clone().or(fallback.$field.clone())
            };
        }
        let unlabeled = match (pick!(unlabeled), pick!(unlabeled_dir)) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    option: "unlabeled-dir",
                    requirement: "replaces `unlabeled`: give one of them".into(),
                });
            }
            (pool, dir) => pool.or(dir.map(UnlabeledPool::Folder)),
        };
        match (pick!(semi), unlabeled) {
            (Some(method), Some(unlabeled)) => Ok(Some(SemiConfig {
                method,
                unlabeled,
                mix: pick!(semi_mix).unwrap_or(MixMode::Input),
                alpha: pick!(semi_alpha).unwrap_or(1.0),
                consistency: pick!(consistency).unwrap_or(100.0),
                rampup_epochs: pick!(consistency_rampup).unwrap_or(epochs as f64 / 4.0),
                ema_decay: pick!(ema_decay).unwrap_or(0.999),
                batch_size: pick!(unlabeled_batch_size).unwrap_or(batch_size),
            })),
            (Some(_), None) => Err(ConfigError::Needs {
                options: &["semi"],
                needed: "unlabeled",
            }),
            (None, _) => {
                const SEMI_OPTIONS: [&str; 8] = [
                    "unlabeled",
                    "unlabeled-dir",
                    "semi-mix",
                    "semi-alpha",
                    "consistency",
                    "consistency-rampup",
                    "ema-decay",
                    "unlabeled-batch-size",
                ];
                let given = [
                    pick!(unlabeled).is_some(),
                    pick!(unlabeled_dir).is_some(),
                    pick!(semi_mix).is_some(),
                    pick!(semi_alpha).is_some(),
                    pick!(consistency).is_some(),
                    pick!(consistency_rampup).is_some(),
                    pick!(ema_decay).is_some(),
                    pick!(unlabeled_batch_size).is_some(),
                ];
                match given.iter().position(|&g| g) {
                    Some(at) => Err(ConfigError::Needs {
                        options: &SEMI_OPTIONS[at..=at],
                        needed: "semi",
                    }),
                    None => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> TrainOptions {
        TrainOptions::default()
    }

    #[test]
    fn no_options_resolve_to_the_librarys_defaults() {
        assert_eq!(none().resolve(1).unwrap(), TrainConfig::default());
    }

    #[test]
    fn given_options_win_over_the_fallback_and_the_model_and_mode_bring_their_defaults() {
        let file = TrainOptions {
            model: Some("preactresnet18".into()),
            epochs: Some(8),
            lr: Some(0.05),
            ..none()
        };
        let flags = TrainOptions {
            lr: Some(0.2),
            mix: Some(MixMode::Input),
            ..none()
        };
        let resolved = flags.resolve_over(&file, 1).unwrap();
        let expected = TrainConfig {
            lr: 0.2,
            ..TrainConfig::default()
                .with_model(ModelKind::PreActResNet { depth: 18 })
                .with_mix(MixMode::Input)
                .with_epochs(8)
        };
        assert_eq!(resolved, expected);
        assert_eq!((resolved.alpha, resolved.width), (1.0, 64));
        assert_eq!(resolved.schedule, Schedule::default_for(8));
    }

    #[test]
    fn partners_are_drawn_within_each_rank_and_device_unless_the_groups_are_given() {
        let devices = TrainOptions {
            device: Some("cpu,cpu".parse().unwrap()),
            ..none()
        };
        assert_eq!(none().resolve(1).unwrap().partner_groups, 1);
        assert_eq!(none().resolve(3).unwrap().partner_groups, 3);
        assert_eq!(devices.resolve(2).unwrap().partner_groups, 4);
        let given = TrainOptions {
            partner_groups: Some(6),
            ..none()
        };
        assert_eq!(given.resolve(2).unwrap().partner_groups, 6);
    }

    #[test]
    fn a_toml_file_takes_the_flags_names_and_the_learning_rate_decay_its_old_name() {
        let file = TrainOptions::from_toml("lr-decay = 0.5\nbatch-size = 20\n").unwrap();
        assert_eq!((file.lr_decay, file.batch_size), (Some(0.5), Some(20)));
        let old = TrainOptions::from_toml("gamma = 0.5").unwrap();
        assert_eq!(old.lr_decay, Some(0.5));
        let unknown = TrainOptions::from_toml("batch_size = 20").unwrap_err();
        assert!(unknown.to_string().contains("batch_size"), "{unknown}");
    }

    #[test]
    fn each_refusal_names_the_option_it_refuses() {
        let refusals = [
            (
                TrainOptions {
                    epochs: Some(0),
                    ..none()
                },
                Some("epochs"),
            ),
            (
                TrainOptions {
                    lr: Some(-1.0),
                    ..none()
                },
                Some("lr"),
            ),
            (
                TrainOptions {
                    lr_decay: Some(0.0),
                    ..none()
                },
                Some("lr-decay"),
            ),
            (
                TrainOptions {
                    schedule: Some("linear".into()),
                    ..none()
                },
                Some("schedule"),
            ),
            (
                TrainOptions {
                    switch_prob: Some(0.5),
                    ..none()
                },
                Some("switch-prob"),
            ),
            (
                TrainOptions {
                    partner_groups: Some(101),
                    ..none()
                },
                Some("batch-size"),
            ),
            (
                TrainOptions {
                    model: Some("vgg".into()),
                    ..none()
                },
                None,
            ),
        ];
        for (options, option) in refusals {
            let error = options.resolve(1).unwrap_err();
            assert_eq!(error.option(), option, "{error}");
        }
    }

    /// One test per refusal, each naming what it refuses.
    macro_rules! refused {
        ($($name:ident: { $($field:ident: $value:expr),* } => $message:expr;)*) => {
            $(
                #[test]
                fn $name() {
                    let options = TrainOptions {
                        $($field: Some($value.into()),)*
                        ..TrainOptions::default()
                    };
                    let error = options.resolve(1).unwrap_err().to_string();
                    assert!(error.contains($message), "{error}");
                }
            )*
        };
    }

    refused! {
        no_labels_per_class: { labels_per_class: 0usize } => "`labels-per-class` must be at least 1";
        an_empty_training_subset: { train_subset: 0usize } => "`train-subset` must be at least 1";
        images_of_no_pixels: { image_size: 0usize } => "`image-size` must be at least 1";
        images_too_large_for_memory: { image_size: 100_000usize } => "`image-size` must be at most 4096";
        no_epochs: { epochs: 0usize } => "`epochs` must be at least 1";
        a_negative_learning_rate: { lr: -1.0 } => "`lr` must be a positive number, got -1";
        a_rate_that_is_not_a_number: { lr: f64::NAN } => "`lr` must be a positive number";
        momentum_of_one: { momentum: 1.0 } => "`momentum` must be in [0, 1)";
        nesterov_without_momentum: { momentum: 0.0 } => "`nesterov` needs a non-zero `momentum`";
        a_negative_weight_decay: { weight_decay: -1e-4 } => "`weight-decay` must be ≥ 0";
        full_label_smoothing: { label_smoothing: 1.0 } => "`label-smoothing` must be in [0, 1)";
        a_zero_learning_rate_decay: { lr_decay: 0.0 } => "`lr-decay` must be positive";
        an_unknown_schedule: { schedule: "linear" } => "'linear' is not a schedule";
        a_schedule_of_bad_milestones: { schedule: "step:a" } => "milestones must be epochs";
        coarse_labels_off_cifar100: { cifar100_coarse: true } => "applies to `dataset` cifar100";
        an_unknown_model: { model: "vgg16" } => "unknown model 'vgg16'";
        a_wide_resnet_of_impossible_depth: { model: "wrn-27-2" } => "wrn depth must be 6n+4";
        an_unknown_dataset: { dataset: "imagenet" } => "unknown dataset 'imagenet'";
        a_negative_alpha: { alpha: -1.0 } => "alpha must be a finite number ≥ 0";
        a_mix_point_the_model_lacks: { mix_layers: vec![0usize, 9] } => "mix point 9 does not exist";
        too_few_layer_weights: { layer_weights: vec![1.0] } => "1 layer weights were given for 3 mix points";
        a_mixing_probability_above_one: { mix_prob: 1.5 } => "must be in [0, 1], got 1.5";
        a_spectrum_at_a_point_the_model_lacks: { spectrum_at: 9usize } => "mix point 9";
        more_partner_groups_than_examples: { partner_groups: 101usize } => "`batch-size` (100) is smaller than `partner-groups` (101";
        a_switch_probability_without_a_mode: { switch_prob: 0.5 } => "`switch-prob` and `switch-alpha` need `switch-to`";
        padding_too_large_for_memory: { pad_to: 5_000usize } => "`pad-to` must be at most 4096";
        regmixup_without_a_mix: { mix_loss: MixLoss::Regmixup, mix: MixMode::None } => "`mix-loss` regmixup adds a mixed copy's loss: it needs a `mix` other than none";
        a_negative_regmixup_weight: { mix_loss: MixLoss::Regmixup, mix_weight: -1.0 } => "`mix-weight` must be a number ≥ 0, got -1";
        a_regmixup_weight_that_is_not_a_number: { mix_loss: MixLoss::Regmixup, mix_weight: f64::NAN } => "`mix-weight` must be a number ≥ 0";
        a_mix_weight_without_regmixup: { mix_weight: 0.5 } => "`mix-weight` applies to `mix-loss` regmixup only";
        ict_without_unlabelled_images: { semi: SemiMethod::Ict } => "`semi` needs `unlabeled`";
        an_unlabelled_pool_without_a_method: { unlabeled: UnlabeledPool::Rest } => "`unlabeled` needs `semi`";
        an_unlabelled_folder_without_a_method: { unlabeled_dir: PathBuf::from("pool") } => "`unlabeled-dir` needs `semi`";
        a_pool_and_a_folder: { semi: SemiMethod::Ict, unlabeled: UnlabeledPool::Rest, unlabeled_dir: PathBuf::from("pool") } => "`unlabeled-dir` replaces `unlabeled`: give one of them";
        a_teacher_decay_without_a_method: { ema_decay: 0.99 } => "`ema-decay` needs `semi`";
        a_teacher_that_never_moves: { semi: SemiMethod::Ict, unlabeled: UnlabeledPool::Rest, ema_decay: 1.0 } => "`ema-decay` must be in [0, 1), got 1";
        a_negative_consistency: { semi: SemiMethod::Ict, unlabeled: UnlabeledPool::Rest, consistency: -1.0 } => "`consistency` must be a number ≥ 0, got -1";
        an_unlabelled_cutmix: { semi: SemiMethod::Ict, unlabeled: UnlabeledPool::Rest, semi_mix: MixMode::Cutmix } => "`semi-mix` must be input or manifold, got cutmix";
        no_unlabelled_images_per_step: { semi: SemiMethod::Ict, unlabeled: UnlabeledPool::Rest, unlabeled_batch_size: 0usize } => "`unlabeled-batch-size` must be at least 1";
    }
}
