//! `mmix train`: resolve the configuration, prepare the run folder, train with progress,
//! and handle interrupts.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{DatasetName, SplitConfig};
use crate::distributed::threads::TensorSums;
use crate::distributed::{self, Collective};
use crate::eval::EvalSuite;
use crate::mixup::{MixMode, PatchUpConfig, Switch};
use crate::models::{Classifier, ModelKind};
use crate::report::{self, Summary};
use crate::train::run_dir::{self, RunDir};
use crate::train::{
    self, EpochRecord, Progress, RunOutcome, Schedule, TrainConfig, Trainer, default_alpha,
    parse_device,
};

use super::args::TrainArgs;
use super::evaluate;

/// Exit status of a run stopped by SIGINT, as shells expect.
pub const INTERRUPTED_EXIT: i32 = 130;

/// Flags win over the TOML file; what neither gives takes the paper's defaults. A run's
/// partners are drawn within each rank's rows by default: the ranks of this process's launch
/// are read here, at the edge, and passed in.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    resolve_with(args, &config_file(args)?, distributed::world().size())
}

/// The options of `--config`, or none.
fn config_file(args: &TrainArgs) -> Result<TrainArgs> {
    match &args.config {
        Some(path) => {
            let text = crate::fsio::read_regular_text(path)
                .with_context(|| format!("cannot read --config {}", path.display()))?;
            parse_config(path, &text)
        }
        None => Ok(TrainArgs::default()),
    }
}

/// The options of a `--config` file's text; `path` names it in errors.
pub fn parse_config(path: &Path, text: &str) -> Result<TrainArgs> {
    toml::from_str(text).map_err(|e| anyhow!("{}: {}", path.display(), e.message().trim_end()))
}

/// [`resolve`] with the config file's options already read, for a launch of `launch_ranks`
/// processes (1 without a launcher); reads nothing else.
pub fn resolve_with(
    args: &TrainArgs,
    file: &TrainArgs,
    launch_ranks: usize,
) -> Result<TrainConfig> {
    macro_rules! pick {
        ($field:ident) => {
            args.$field.clone().or(file.$field.clone())
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
        Some(text) => Schedule::parse(&text, epochs).map_err(|e| anyhow!(e))?,
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
            bail!("--switch-prob and --switch-alpha need --switch-to MODE")
        }
        None => None,
    };
    let patchup = PatchUpConfig {
        block: pick!(patchup_block).unwrap_or(defaults.patchup.block),
        gamma: pick!(patchup_gamma).unwrap_or(defaults.patchup.gamma),
        kind: pick!(patchup_kind).unwrap_or(defaults.patchup.kind),
    };
    let config = TrainConfig {
        dataset,
        data_dir: pick!(data_dir),
        image_size: pick!(image_size).unwrap_or(defaults.image_size),
        cifar100_labels_coarse: pick!(cifar100_coarse).unwrap_or(defaults.cifar100_labels_coarse),
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
        // Every rank of the process's launch (and every device it lists) mixes within its
        // own rows by default.
        partner_groups: pick!(partner_groups).unwrap_or_else(|| {
            let devices = pick!(device).map_or(1, |d| d.split(',').count());
            launch_ranks * devices
        }),
        loss: pick!(loss).unwrap_or(defaults.loss),
        label_smoothing: pick!(label_smoothing).unwrap_or(defaults.label_smoothing),
        epochs,
        eval_every: pick!(eval_every).unwrap_or(defaults.eval_every),
        batch_size: pick!(batch_size).unwrap_or(defaults.batch_size),
        lr: pick!(lr).unwrap_or(defaults.lr),
        momentum: pick!(momentum).unwrap_or(defaults.momentum),
        nesterov: pick!(nesterov).unwrap_or(defaults.nesterov),
        weight_decay: pick!(weight_decay).unwrap_or(defaults.weight_decay),
        schedule,
        gamma: pick!(gamma).unwrap_or(defaults.gamma),
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
        evaluate: args.suite.clone().unwrap_or_else(|| EvalSuite {
            attacks: pick!(attacks).unwrap_or_default(),
            attack_examples: pick!(attack_examples),
            deformations: pick!(deformations).unwrap_or_default(),
            spectrum_at: pick!(spectrum_at),
            ..EvalSuite::default()
        }),
    };
    config.validate().map_err(|e| anyhow!(e))?;
    Ok(config)
}

/// A global batch's rows per rank: "64", or "64–65" where they differ.
fn shard_sizes(batch: usize, ranks: usize) -> String {
    let sizes: Vec<usize> = (0..ranks)
        .map(|rank| distributed::shard(batch, ranks, rank).len())
        .collect();
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    match (min, max) {
        (Some(min), Some(max)) if min != max => format!("{min}–{max}"),
        (Some(min), _) => min.to_string(),
        _ => String::new(),
    }
}

/// The device named by `--device`; under several ranks, `cuda` without an index is the
/// GPU of this rank's place on its machine.
pub(super) fn parse_device_for_rank(
    name: &str,
    world: &dyn Collective,
) -> Result<burn::tensor::Device> {
    let name = match name.eq_ignore_ascii_case("cuda") && world.size() > 1 {
        true => format!("cuda:{}", world.local_rank()),
        false => name.to_string(),
    };
    parse_device(&name).map_err(|e| anyhow!(e))
}

fn default_out(config: &TrainConfig) -> PathBuf {
    PathBuf::from("runs").join(format!(
        "{}-{}-{}-s{}",
        config.model, config.dataset, config.mix, config.seed
    ))
}

/// Flags that would change a saved run; `--resume` takes the run's own configuration.
fn reject_flags_with_resume(args: &TrainArgs) -> Result<()> {
    let given = TrainArgs {
        resume: None,
        device: None,
        ..args.clone()
    };
    // Comparing whole structs keeps every future option covered.
    if given != TrainArgs::default() {
        bail!(
            "--resume continues a run with its saved config.json; only --device may be given with it"
        );
    }
    Ok(())
}

pub fn load_saved_config(dir: &Path) -> Result<TrainConfig> {
    Ok(run_dir::read_record(dir)?.train)
}

fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
    let valid = record
        .valid
        .map(|v| format!(" valid_acc {:.2}%", v.accuracy * 100.0))
        .unwrap_or_default();
    let test = record
        .test
        .map(|t| {
            format!(
                " test_acc {:.2}% test_nll {:.4} test_ece {:.2}%",
                t.accuracy * 100.0,
                t.nll,
                t.ece * 100.0
            )
        })
        .unwrap_or_default();
    format!(
        "epoch {:>3}/{epochs} lr {:.4} train_loss {:.4} train_acc {:.2}%{valid}{test} {:.0} img/s {:.1}s",
        record.epoch,
        record.lr,
        record.train_loss,
        record.train_acc * 100.0,
        record.images_per_second,
        record.seconds
    )
}

/// The process's interrupt flag, cleared for a new run. The handler behind it is installed
/// once per process (a second `ctrlc::set_handler` is refused), so every run of a process
/// that trains several (`mmix demo`) hears Ctrl-C.
fn interrupt_flag() -> &'static AtomicBool {
    static FLAG: AtomicBool = AtomicBool::new(false);
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // A second Ctrl-C leaves at once; the last committed checkpoint is intact either way.
        let installed = ctrlc::set_handler(|| {
            if FLAG.swap(true, Ordering::SeqCst) {
                // `_exit`, not `exit`: no destructors or exit handlers run, which would tear
                // oneDNN down under the thread still inside it.
                // SAFETY: `_exit` ends the process at once and is async-signal-safe.
                unsafe { libc::_exit(INTERRUPTED_EXIT) };
            }
            // A launcher signals every rank; one of them says so.
            if distributed::world().rank() == 0 {
                eprintln!(
                    "\ninterrupt: finishing this batch and writing a checkpoint (Ctrl-C again to quit now)"
                );
            }
        });
        if let Err(error) = installed {
            eprintln!("warning: Ctrl-C will stop without a checkpoint ({error})");
        }
    });
    FLAG.store(false, Ordering::SeqCst);
    &FLAG
}

/// The run's `train.log`, opened once the run has got going: a resume refused for a damaged
/// checkpoint leaves the folder exactly as it was. Lines that cannot be written are dropped;
/// the checkpoint and reports are what a run's result rests on.
struct RunLog {
    path: PathBuf,
    headline: String,
    file: RefCell<Option<std::fs::File>>,
}

impl RunLog {
    fn new(path: PathBuf, headline: String) -> Self {
        Self {
            path,
            headline,
            file: RefCell::new(None),
        }
    }

    /// Opens the log and writes the headline, once.
    fn start(&self) {
        let mut file = self.file.borrow_mut();
        if file.is_none() {
            *file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            if let Some(file) = file.as_mut() {
                writeln!(file, "{}", self.headline).ok();
            }
        }
    }

    /// Appends a line, if the run got going.
    fn line(&self, line: &str) {
        if let Some(file) = self.file.borrow_mut().as_mut() {
            writeln!(file, "{line}").ok();
        }
    }
}

/// What a finished (or interrupted) train command reports back.
pub struct TrainResult {
    pub dir: PathBuf,
    pub summary: Summary,
    pub interrupted: bool,
}

/// `step` on rank 0 alone (it reads or writes the run folder, which only rank 0 need see);
/// its value and outcome on every rank. Alone, just `step`.
fn on_rank_zero(world: &dyn Collective, step: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
    let outcome = match world.rank() {
        0 => step().map_err(|e| format!("{e:#}")),
        _ => Ok(Vec::new()),
    };
    let bytes = distributed::agree(world, outcome).map_err(|failure| anyhow!("{failure}"))?;
    Ok(distributed::from_rank_zero(world, bytes))
}

/// A step every rank takes for itself (reading its data, checking its device), agreed on: it
/// stops every rank if it fails on one.
fn on_every_rank<T>(world: &dyn Collective, step: impl FnOnce() -> Result<T>) -> Result<T> {
    let outcome = step().map_err(|e| format!("{e:#}"));
    distributed::agree(world, outcome).map_err(|failure| anyhow!("{failure}"))
}

/// How a run begins: from its folder's latest checkpoint, or afresh in a folder that was
/// absent or empty (which a run that keeps nothing restores).
#[derive(Clone, Copy, PartialEq)]
enum Start {
    Resume,
    Fresh,
}

pub fn run(args: &TrainArgs, quiet_bar: bool) -> Result<TrainResult> {
    let world = distributed::world();
    let (config, dir, start) = match &args.resume {
        Some(dir) => {
            reject_flags_with_resume(args)?;
            // Rank 0 reads the saved configuration; ranks elsewhere need not share its disk.
            let saved = on_rank_zero(world, || {
                run_dir::check_own_entries(dir)?;
                Ok(serde_json::to_vec(&load_saved_config(dir)?)?)
            })?;
            let mut config: TrainConfig =
                serde_json::from_slice(&saved).context("rank 0's configuration arrived damaged")?;
            if let Some(device) = &args.device {
                config.device = device.clone();
            }
            (config, dir.clone(), Start::Resume)
        }
        None => {
            let file = config_file(args)?;
            let config = resolve_with(args, &file, distributed::world().size())?;
            let dir = args
                .out
                .clone()
                .or(file.out)
                .unwrap_or_else(|| default_out(&config));
            super::require_path("--out", &dir)?;
            // Refused before any data is read; the folder is made once the run can start.
            on_rank_zero(world, || {
                run_dir::check_fresh(&dir)?;
                Ok(Vec::new())
            })?;
            (config, dir, Start::Fresh)
        }
    };
    let devices: Vec<&str> = config.device.split(',').map(str::trim).collect();
    if devices.len() == 1 {
        return run_rank(
            world,
            &config,
            &dir,
            start,
            (quiet_bar, args.trace),
            &config.device,
        );
    }
    if world.size() > 1 {
        bail!(
            "--device lists {} devices, but under mpirun each rank takes one: give --device cuda, and each rank takes its local rank's GPU",
            devices.len()
        );
    }
    // One rank per device, each a thread of this process.
    let sums = tensor_sums(&devices);
    let mut outcomes = distributed::threads::run_on_threads(devices.len(), sums, |rank| {
        run_rank(
            distributed::world(),
            &config,
            &dir,
            start,
            (quiet_bar, args.trace),
            devices[rank],
        )
    });
    outcomes.swap_remove(0)
}

/// Where the ranks of `devices`, threads of this process, sum their gradients: on the GPUs
/// when every device is a CUDA GPU this machine has and NCCL is installed, else through host
/// memory. A device that is missing is left for its rank to report.
fn tensor_sums(devices: &[&str]) -> TensorSums {
    #[cfg(feature = "cuda")]
    {
        let gpus = devices.iter().all(|name| {
            let kind = name.split(':').next().unwrap_or_default();
            kind.eq_ignore_ascii_case("cuda") && parse_device(name).is_ok()
        });
        if gpus {
            match train::nccl_loads() {
                Ok(()) => return TensorSums::OnGpus,
                Err(why) => eprintln!(
                    "warning: {why}; the GPUs' gradients are summed through host memory, which is slower"
                ),
            }
        }
    }
    let _ = devices;
    TensorSums::InHostMemory
}

/// The run as one rank of `world` sees it, on `device_name`.
fn run_rank(
    world: &dyn Collective,
    config: &TrainConfig,
    dir: &Path,
    start: Start,
    (quiet_bar, trace): (bool, bool),
    device_name: &str,
) -> Result<TrainResult> {
    let (config, dir) = (config.clone(), dir.to_path_buf());
    let resuming = start == Start::Resume;
    let leader = world.rank() == 0;
    distributed::check_split(config.batch_size, config.partner_groups, world.size())?;
    let (device, data) = on_every_rank(world, || {
        let device = parse_device_for_rank(device_name, world)?;
        crate::kernels::use_precision(config.precision, &device).map_err(|e| anyhow!(e))?;
        let data = train::prepare_data(&config)?;
        train::check_run(&config, &data)?;
        Ok((device, data))
    })?;
    let (mut tracer, mut folder) = (None, None);
    on_rank_zero(world, || {
        let made = match start {
            Start::Resume => RunDir::open(&dir),
            Start::Fresh => RunDir::create(&dir, &config, &data, &device),
        }
        .with_context(|| format!("cannot prepare run folder {}", dir.display()))?;
        if trace {
            match train::trace::TraceWriter::create(&dir.join(run_dir::TRACE), &config, &data) {
                Ok(writer) => tracer = Some(writer),
                Err(e) => {
                    // A run that could not start leaves its folder as it found it.
                    let _ = made.abandon();
                    return Err(e.into());
                }
            }
        }
        folder = Some(made);
        Ok(Vec::new())
    })?;
    let note = if resuming { "resumed" } else { "started" };
    let draws_points =
        config.mix.draws_points() || config.switch.is_some_and(|s| s.mode.draws_points());
    let mixing = match config.mix {
        MixMode::None => "no mixing".to_string(),
        _ if draws_points => format!("mix {} layers {:?}", config.mix_label(), config.mix_layers),
        _ => format!("mix {}", config.mix_label()),
    };
    let arithmetic = crate::kernels::convolution_route(&device, config.precision)
        .map(|route| format!(", convolutions {route}"))
        .unwrap_or_default();
    let ranks = match world.size() {
        1 => String::new(),
        n => format!(
            ", global batch {} = {n} ranks × {}{}",
            config.batch_size,
            shard_sizes(config.batch_size, n),
            match world.sums_on_gpus() {
                true => ", gradients summed on the GPUs (NCCL)",
                false => "",
            }
        ),
    };
    let headline = format!(
        "{note} {} on {} ({} train / {} valid / {} test), {mixing}, {} epochs, seed {}, device {}{arithmetic}{ranks}",
        config.model,
        config.dataset,
        data.train.len(),
        data.valid.as_ref().map_or(0, |v| v.len()),
        data.dataset.test.len(),
        config.epochs,
        config.seed,
        config.device
    );
    if leader {
        println!("{headline} → {}", dir.display());
        super::note_fast_path(&device, config.precision);
    }
    let log = RunLog::new(dir.join("train.log"), headline);
    let mut trace_error = None;

    // The bar draws on stderr, and its `println` prints nothing where it cannot draw: with
    // stderr redirected (or under mpirun, which gives stdout alone a terminal) the epoch lines
    // go to stdout plainly.
    let interactive =
        std::io::stdout().is_terminal() && std::io::stderr().is_terminal() && !quiet_bar && leader;
    let bar = interactive.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} batches, ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let interrupt = interrupt_flag();
    let epochs = config.epochs;
    let progress = |event: Progress| match event {
        Progress::EpochStart { epoch, batches } => {
            log.start();
            if let Some(bar) = &bar {
                bar.reset();
                bar.set_length(batches as u64);
                bar.set_prefix(format!("epoch {epoch}/{epochs}"));
            }
        }
        Progress::Batch { done, loss, .. } => {
            if let Some(bar) = &bar {
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
        }
        Progress::EpochEnd(record) => {
            let line = epoch_line(record, epochs);
            match &bar {
                Some(bar) => bar.println(&line),
                None => println!("{line}"),
            }
            log.line(&line);
        }
        Progress::Start { weights } => {
            if let Some(Err(e)) = tracer.as_mut().map(|t| t.start(weights)) {
                (tracer, trace_error) = (None, Some(e));
            }
        }
        Progress::Step { trace, weights } => {
            if let Some(Err(e)) = tracer.as_mut().map(|t| t.step(trace, weights)) {
                (tracer, trace_error) = (None, Some(e));
            }
        }
    };
    let write_reports = |state: &train::RunState, model: &Classifier| match &folder {
        Some(folder) => folder.write_epoch(&config, state, model),
        // Only rank 0 writes the folder.
        None => Ok(()),
    };
    let outcome = Trainer::new(&config, &data, &device)
        .checkpoints(dir.join("checkpoint"))
        .interrupt(interrupt)
        .on_progress(progress)
        .after_epoch(write_reports)
        .run();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    // A trace that could not be written fails the run that asked for it.
    let outcome = match trace_error {
        Some(e) => Err(e),
        None => outcome,
    };
    let (state, interrupted) = match outcome {
        Ok(RunOutcome::Finished(state)) => (state, false),
        Ok(RunOutcome::Interrupted(state)) => (state, true),
        Err(e) => {
            log.line(&format!("error: {e}"));
            let kept = match &folder {
                Some(folder) => folder.abandon()?,
                None => String::new(),
            };
            return Err(e).with_context(|| format!("run {}{kept}", dir.display()));
        }
    };
    if !leader {
        // Rank 0 runs the final evaluation and writes the reports.
        let summary = report::summary(&config, &state, None);
        return Ok(TrainResult {
            dir,
            summary,
            interrupted,
        });
    }
    let folder = folder.expect("rank 0 holds the run folder");
    let evaluation = if interrupted {
        report::write_run_reports(&dir, &config, &state, None)
            .with_context(|| format!("cannot write the reports in {}", dir.display()))?;
        None
    } else {
        let init = |device: &burn::tensor::Device| train::build_model(&config, &data, device);
        let evaluation = folder.finish(&config, &data, &device, &init)?;
        println!("{}", evaluate::describe(&evaluation));
        log.start();
        log.line(&evaluate::describe(&evaluation));
        Some(evaluation)
    };
    let summary = report::summary(&config, &state, evaluation.as_ref());
    Ok(TrainResult {
        dir,
        summary,
        interrupted,
    })
}

pub fn print_result(result: &TrainResult) {
    let s = &result.summary;
    if result.interrupted {
        println!(
            "interrupted after {} of {} epochs; continue with `mmix train --resume {}`",
            s.epochs_done,
            s.epochs,
            result.dir.display()
        );
        return;
    }
    if let Some(f) = &s.final_metrics {
        println!(
            "final: test_acc {:.2}% test_nll {:.4} test_ece {:.2}%",
            f.test_acc * 100.0,
            f.test_nll,
            f.test_ece * 100.0
        );
    }
    match &s.best_valid {
        Some(b) => println!(
            "best valid: epoch {} valid_acc {:.2}% (test_acc {:.2}% at that epoch)",
            b.epoch,
            b.valid_acc * 100.0,
            b.test_acc * 100.0
        ),
        None => println!("best valid: none (no --valid-split)"),
    }
    println!(
        "{:.0}s of training at {:.0} img/s; outputs in {}",
        s.train_seconds,
        s.train_images_per_second,
        result.dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_and_no_file_resolve_to_the_librarys_defaults() {
        let resolved = resolve_with(&TrainArgs::default(), &TrainArgs::default(), 1).unwrap();
        assert_eq!(resolved, TrainConfig::default());
    }

    #[test]
    fn flags_win_over_the_file_and_the_model_and_mode_bring_their_defaults() {
        let file = TrainArgs {
            model: Some("preactresnet18".into()),
            epochs: Some(8),
            lr: Some(0.05),
            ..TrainArgs::default()
        };
        let flags = TrainArgs {
            lr: Some(0.2),
            mix: Some(MixMode::Input),
            ..TrainArgs::default()
        };
        let resolved = resolve_with(&flags, &file, 1).unwrap();
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
        let devices = TrainArgs {
            device: Some("cpu,cpu".into()),
            ..TrainArgs::default()
        };
        let none = TrainArgs::default();
        assert_eq!(resolve_with(&none, &none, 1).unwrap().partner_groups, 1);
        assert_eq!(resolve_with(&none, &none, 3).unwrap().partner_groups, 3);
        assert_eq!(resolve_with(&devices, &none, 2).unwrap().partner_groups, 4);
        let given = TrainArgs {
            partner_groups: Some(6),
            ..TrainArgs::default()
        };
        assert_eq!(resolve_with(&given, &none, 2).unwrap().partner_groups, 6);
    }
}
