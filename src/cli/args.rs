//! Command-line definitions.

// These comments are `--help` text: brackets are optional parts and <x> placeholders, not
// links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::eval::{Attack, Deformation, EvalSuite};
use crate::mixup::{AlphaSchedule, Loss, MixMode, PatchUpKind};

#[derive(Parser)]
#[command(
    name = "mmix",
    version,
    about = "Manifold Mixup training, evaluation and comparison on Burn"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Train a classifier with no, input or manifold mixup; writes a run folder.
    Train(TrainArgs),
    /// Re-evaluate a run's latest checkpoint and print the metrics as JSON.
    Eval(EvalArgs),
    /// Compare runs: a Markdown table and an overlay of test-accuracy curves.
    Compare(CompareArgs),
    /// Classify image files (PNG or JPEG) with a trained run: the most probable classes of
    /// each, one line per image.
    Predict(PredictArgs),
    /// One draw of the design of studies/few-labels-replication.toml (100 labels per class)
    /// on the embedded Fashion-MNIST subset, without and with manifold mixup, compared; then
    /// what the study found over its seeds, corrected for multiplicity, and where mixing
    /// costs (what `cargo run --release` runs).
    Demo(DemoArgs),
    /// List the models with their mix points and paper mix sets.
    Models,
    /// Inspect datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Time the train step (or, with --data, the data pipeline) and print one JSON line.
    Bench(BenchArgs),
    /// Run a grid of arms × seeds (resumable), then report every metric over seeds with
    /// 95% intervals and paired differences against a baseline arm.
    Study(StudyArgs),
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Counts per split and class, image shape, mean/std, and a PNG grid of samples.
    Inspect(InspectArgs),
}

/// Every training option; each may also come from `--config run.toml` (flags win).
#[derive(Args, Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainArgs {
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
    pub device: Option<String>,
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
    /// step:E1,E2,... or cosine (default: step at 50% and 75% of the epochs).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Step-decay factor at each milestone (default 0.1).
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
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
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Also write the run's exact stream to RUN/trace/ (data, initial weights, every step's
    /// examples, augmentation, mix plan, learning rate and loss), for
    /// scripts/parity/trajectory.py to replay in PyTorch.
    #[arg(long)]
    #[serde(skip)]
    pub trace: bool,
    /// A TOML file with any of these options (flags win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// A whole evaluation suite, in place of the flags above (what a study passes).
    #[arg(skip)]
    #[serde(skip)]
    pub suite: Option<EvalSuite>,
}

#[derive(Args)]
pub struct StudyArgs {
    /// The study file: seeds, shared [train] options, [evaluate] and [[arm]] tables.
    pub file: PathBuf,
    /// The study folder (default: the file's path without .toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train on this device instead of each arm's.
    #[arg(long)]
    pub device: Option<String>,
    /// Train nothing: report on the runs finished so far.
    #[arg(long)]
    pub report_only: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The run folder.
    pub dir: PathBuf,
    /// The split to evaluate on.
    #[arg(long, value_enum, default_value = "test")]
    pub split: EvalSplit,
    /// cpu, cuda[:N] or wgpu[:N] (default: the run's).
    #[arg(long)]
    pub device: Option<String>,
    /// Accuracy under a white-box attack: fgsm:EPS or pgd:EPS:STEPS[:STEP_SIZE] (repeatable).
    #[arg(long = "attack")]
    pub attacks: Vec<Attack>,
    /// Attack only the first N examples of the split.
    #[arg(long)]
    pub attack_examples: Option<usize>,
    /// Metrics on a deformed split: rotate:DEG, shear:DEG, zoom-out:P or zoom-in:P (repeatable).
    #[arg(long = "deform")]
    pub deformations: Vec<Deformation>,
    /// The class-conditional spectrum of the representations at this mix point.
    #[arg(long)]
    pub spectrum_at: Option<usize>,
}

#[derive(Args)]
pub struct PredictArgs {
    /// The run folder.
    pub dir: PathBuf,
    /// Image files, or folders whose image files (.png, .jpg, .jpeg) are all classified.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many of the most probable classes to print per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// text (one line per image), json (one JSON object per line) or csv.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PredictFormat,
    /// Plain softmax probabilities, not those at the temperature the run fitted on its
    /// validation split.
    #[arg(long)]
    pub uncalibrated: bool,
    /// cpu, cuda[:N] or wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictFormat {
    Text,
    Json,
    Csv,
}

/// The split `mmix eval` measures on.
#[derive(clap::ValueEnum, serde::Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// The test split: its results become the run's (evaluation.json, summary.json).
    Test,
    Valid,
    Train,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Run folders.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write the overlay of test-accuracy curves.
    #[arg(long, default_value = "compare.png")]
    pub plot: PathBuf,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Parent folder of the two runs (default: the first free runs/demo, runs/demo-1, ...).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Epochs per run (default: the study's).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long, default_value = "fashion-mnist-mini")]
    pub dataset: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to write samples.png (default: runs/inspect-<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Show the samples after augmentation.
    #[arg(long)]
    pub augment: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "preactresnet18")]
    pub model: String,
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value = "manifold")]
    pub mix: MixMode,
    /// λ and mix point (or box or mask) per example instead of per batch.
    #[arg(long)]
    pub per_example: bool,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// f32, or bf16: convolutions on oneDNN with bf16 operands and f32 accumulation.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::kernels::Precision,
    /// Input channels and size of the random batch (CIFAR layout by default).
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Measure the data pipeline instead, on this dataset.
    #[arg(long)]
    pub data: bool,
    #[arg(long, default_value = "fashion-mnist-mini")]
    pub dataset: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}
