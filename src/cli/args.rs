//! Command-line definitions.

// These comments are `--help` text: brackets are optional parts and <x> placeholders, not
// links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use crate::eval::{Attack, Deformation};
use crate::mixup::MixMode;
use crate::train::{DeviceName, Devices, TrainOptions};
use clap::{Args, Parser, Subcommand};

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
    /// Check a device against the PyTorch golden cases of tests/parity (one train step of
    /// every model family: logits, loss, every gradient), the first thing a new GPU must show.
    #[command(hide = true)]
    Parity(ParityArgs),
}

#[derive(Args)]
pub struct ParityArgs {
    /// The device: cpu, cuda[:N] or wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: crate::train::DeviceName,
    /// The folder of the cases' files.
    #[arg(long, default_value = "tests/parity")]
    pub cases: std::path::PathBuf,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Counts per split and class, image shape, mean/std, and a PNG grid of samples.
    Inspect(InspectArgs),
}

/// `mmix train`: the run's options, and how this invocation starts it.
#[derive(Args, Default, Clone, Debug, PartialEq)]
pub struct TrainArgs {
    #[command(flatten)]
    pub options: TrainOptions,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Also write the run's exact stream to RUN/trace/ (data, initial weights, every step's
    /// examples, augmentation, mix plan, learning rate and loss), for
    /// scripts/parity/trajectory.py to replay in PyTorch.
    #[arg(long)]
    pub trace: bool,
    /// A TOML file with any of these options (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct StudyArgs {
    /// The study file: seeds, shared [train] options, [evaluate] and [[arm]] tables.
    pub file: PathBuf,
    /// The study folder (default: the file's path without .toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train on this device (or devices) instead of each arm's.
    #[arg(long)]
    pub device: Option<Devices>,
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
    /// cpu, cuda[:N] or wgpu[:N] (default: the run's, or the first of its GPUs).
    #[arg(long)]
    pub device: Option<DeviceName>,
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
    /// How many of the most probable classes to print per image (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub top: u16,
    /// text (one line per image), json (one JSON object per line) or csv.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PredictFormat,
    /// Plain softmax probabilities, not those at the temperature the run fitted on its
    /// validation split.
    #[arg(long)]
    pub uncalibrated: bool,
    /// cpu, cuda[:N] or wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
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
    pub device: Devices,
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
    /// replace, or regmixup (the clean loss plus the mixed copy's: two forward passes).
    #[arg(long, value_enum, default_value = "replace")]
    pub mix_loss: crate::mixup::MixLoss,
    /// ict: add Interpolation Consistency on a batch of random unlabelled images (a teacher
    /// forward pass, a mixed student pass, the teacher's update) to each step.
    #[arg(long, value_enum)]
    pub semi: Option<crate::train::SemiMethod>,
    /// Where --semi mixes the unlabelled pair: input (ICT) or manifold (hidden-space ICT).
    #[arg(long, value_enum, default_value = "input", requires = "semi")]
    pub semi_mix: MixMode,
    /// Unlabelled images per --semi step (default: --batch-size).
    #[arg(long, requires = "semi")]
    pub unlabeled_batch_size: Option<usize>,
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
    pub device: DeviceName,
    /// Measure the data pipeline instead, on this dataset.
    #[arg(long)]
    pub data: bool,
    #[arg(long, default_value = "fashion-mnist-mini")]
    pub dataset: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn the_learning_rate_decay_answers_to_its_old_flag_too() {
        for flag in ["--lr-decay", "--gamma"] {
            let cli = Cli::try_parse_from(["mmix", "train", flag, "0.5"]).unwrap();
            let Some(Command::Train(args)) = cli.command else {
                panic!("{flag} did not parse as a train command");
            };
            assert_eq!(args.options.lr_decay, Some(0.5), "{flag}");
        }
    }
}
