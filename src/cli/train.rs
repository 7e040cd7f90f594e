//! `mmix train`: resolve the configuration, prepare the run folder, train with progress,
//! and handle interrupts.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use crate::distributed::threads::TensorSums;
use crate::distributed::{self, Collective};
use crate::mixup::MixMode;
use crate::models::Classifier;
use crate::report::{self, Summary};
use crate::train::run_dir::{self, RunDir};
use crate::train::trace::TraceWriter;
use crate::train::{self, ConfigError, DeviceName, RunOutcome, TrainConfig, TrainOptions, Trainer};

use super::args::TrainArgs;
use super::console::{Console, RunLog};
use super::evaluate;

/// Exit status of a run stopped by SIGINT, as shells expect.
pub const INTERRUPTED_EXIT: i32 = 130;

/// Flags win over the TOML file; what neither gives takes the library's defaults. A run's
/// partners are drawn within each rank's rows by default: the ranks of this process's launch
/// are read here, at the edge, and passed in.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let file = config_file(args)?;
    args.options
        .resolve_over(&file, distributed::world().size())
        .map_err(flag_error)
}

/// A refused configuration as the command line says it: the options it names (in
/// backquotes) become flags.
pub(crate) fn flag_error(error: ConfigError) -> anyhow::Error {
    let text = error.to_string();
    match error {
        ConfigError::Invalid { .. } | ConfigError::Needs { .. } => anyhow!(as_flags(&text)),
        other => anyhow!(other),
    }
}

/// `` `batch-size` `` → `--batch-size`, wherever the text names an option so.
fn as_flags(text: &str) -> String {
    let mut parts = text.split('`');
    let mut flagged = parts.next().unwrap_or_default().to_string();
    for (i, part) in parts.enumerate() {
        match i % 2 {
            0 => flagged.push_str(&format!("--{part}")),
            _ => flagged.push_str(part),
        }
    }
    flagged
}

/// The options of `--config`, or none.
fn config_file(args: &TrainArgs) -> Result<TrainOptions> {
    let Some(path) = &args.config else {
        return Ok(TrainOptions::default());
    };
    let text = crate::fsio::read_regular_text(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    TrainOptions::from_toml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
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
pub(super) fn open_device_for_rank(
    name: DeviceName,
    world: &dyn Collective,
) -> Result<burn::tensor::Device> {
    let name = name.for_local_rank(world.local_rank(), world.size());
    name.open().map_err(|e| anyhow!(e))
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
        options: TrainOptions {
            device: None,
            ..args.options.clone()
        },
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

/// The process's interrupt flag, cleared for a new run. The handler behind it is installed
/// once per process (a second `ctrlc::set_handler` is refused), so every run of a process
/// that trains several (`mmix demo`) hears Ctrl-C.
fn interrupt_flag() -> &'static AtomicBool {
    static FLAG: AtomicBool = AtomicBool::new(false);
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // A second Ctrl-C leaves at once; the last committed checkpoint is intact either way.
        let installed = ctrlc::set_handler(|| {
            if FINAL_EVALUATION.load(Ordering::SeqCst) {
                // Training is over and checkpointed; what is left is measuring it, which
                // `mmix eval` redoes, and `evaluation.json` is replaced whole or not at all.
                eprintln!(
                    "\ninterrupt: the run is trained and checkpointed; its final evaluation stops here (`mmix eval` on the run folder measures it)"
                );
                // SAFETY: `_exit` ends the process at once and is async-signal-safe.
                unsafe { libc::_exit(INTERRUPTED_EXIT) };
            }
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
    FINAL_EVALUATION.store(false, Ordering::SeqCst);
    &FLAG
}

/// Set while a finished run is measured at the end: an interrupt then stops at once.
static FINAL_EVALUATION: AtomicBool = AtomicBool::new(false);

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
            if let Some(device) = &args.options.device {
                config.device = device.clone();
            }
            (config, dir.clone(), Start::Resume)
        }
        None => {
            let file = config_file(args)?;
            let config = args
                .options
                .resolve_over(&file, world.size())
                .map_err(flag_error)?;
            let dir = args
                .options
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
    let devices = config.device.names();
    if let [device] = devices {
        return run_rank(
            world,
            &config,
            &dir,
            start,
            (quiet_bar, args.trace),
            *device,
        );
    }
    if world.size() > 1 {
        bail!(
            "--device lists {} devices, but under mpirun each rank takes one: give --device cuda, and each rank takes its local rank's GPU",
            devices.len()
        );
    }
    // One rank per device, each a thread of this process.
    let sums = tensor_sums(devices);
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
fn tensor_sums(devices: &[DeviceName]) -> TensorSums {
    #[cfg(feature = "cuda")]
    {
        let gpus = devices
            .iter()
            .all(|name| matches!(name, DeviceName::Cuda(_)) && name.open().is_ok());
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

/// The run as one rank of `world` sees it, on `device_name`: every rank reads its data and
/// trains; rank 0 alone holds the folder, shows progress and evaluates at the end.
fn run_rank(
    world: &dyn Collective,
    config: &TrainConfig,
    dir: &Path,
    start: Start,
    (quiet_bar, trace): (bool, bool),
    device_name: DeviceName,
) -> Result<TrainResult> {
    let leader = world.rank() == 0;
    distributed::check_split(config.batch_size, config.partner_groups, world.size())?;
    let (device, data) = on_every_rank(world, || {
        let device = open_device_for_rank(device_name, world)?;
        crate::kernels::use_precision(config.precision, &device).map_err(|e| anyhow!(e))?;
        let data = train::prepare_data(config)?;
        train::check_run(config, &data)?;
        Ok((device, data))
    })?;
    let (folder, tracer) = prepare_folder(world, start, dir, config, &data, &device, trace)?;
    let headline = headline(start, config, &data, &device, world);
    if leader {
        println!("{headline} → {}", dir.display());
        super::note_fast_path(&device, config.precision);
    }
    let log = RunLog::new(dir.join(run_dir::LOG), headline);
    let mut console = Console::new(config.epochs, leader && !quiet_bar, log, tracer);
    let write_reports = |state: &train::RunState, model: &Classifier| match &folder {
        Some(folder) => folder.write_epoch(config, state, model),
        // Only rank 0 writes the folder.
        None => Ok(()),
    };
    let interrupt = interrupt_flag();
    let outcome = Trainer::new(config, &data, &device)
        .checkpoints(dir.join(run_dir::CHECKPOINTS))
        .teacher_weights(dir.join(run_dir::TEACHER_WEIGHTS))
        .interrupt(interrupt)
        .on_progress(|event| console.show(event))
        .after_epoch(write_reports)
        .run();
    let (state, interrupted) = match console.finish(outcome) {
        Ok(RunOutcome::Finished(state)) => (state, false),
        Ok(RunOutcome::Interrupted(state)) => (state, true),
        Err(e) => {
            console.log().line(&format!("error: {e}"));
            let kept = match &folder {
                Some(folder) => folder.abandon()?,
                None => String::new(),
            };
            return Err(e).with_context(|| format!("run {}{kept}", dir.display()));
        }
    };
    // An interrupt that came as the last epoch ended stops before the final evaluation.
    let interrupted = interrupted || interrupt.load(Ordering::SeqCst);
    let evaluation = match (&folder, interrupted) {
        (Some(folder), false) => {
            let init = |device: &burn::tensor::Device| train::build_model(config, &data, device);
            FINAL_EVALUATION.store(true, Ordering::SeqCst);
            let evaluation = folder.finish(config, &data, &device, &init);
            FINAL_EVALUATION.store(false, Ordering::SeqCst);
            let evaluation = evaluation?;
            let line = evaluate::describe(&evaluation);
            println!("{line}");
            console.log().start();
            console.log().line(&line);
            Some(evaluation)
        }
        (Some(_), true) => {
            report::write_run_reports(dir, config, &state, None)
                .with_context(|| format!("cannot write the reports in {}", dir.display()))?;
            None
        }
        // Rank 0 runs the final evaluation and writes the reports.
        (None, _) => None,
    };
    Ok(TrainResult {
        dir: dir.to_path_buf(),
        summary: report::summary(config, &state, evaluation.as_ref()),
        interrupted,
    })
}

/// On rank 0, the run's folder (made, or opened to continue) and the trace writer where
/// `trace` asks for one; `None` on the other ranks.
fn prepare_folder(
    world: &dyn Collective,
    start: Start,
    dir: &Path,
    config: &TrainConfig,
    data: &train::RunData,
    device: &burn::tensor::Device,
    trace: bool,
) -> Result<(Option<RunDir>, Option<TraceWriter>)> {
    let (mut folder, mut tracer) = (None, None);
    on_rank_zero(world, || {
        let made = match start {
            Start::Resume => RunDir::open(dir),
            Start::Fresh => RunDir::create(dir, config, data, device),
        }
        .with_context(|| format!("cannot prepare run folder {}", dir.display()))?;
        if trace {
            match TraceWriter::create(&dir.join(run_dir::TRACE), config, data) {
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
    Ok((folder, tracer))
}

/// The run's first line: what trains on what, how it mixes, and where the arithmetic runs.
fn headline(
    start: Start,
    config: &TrainConfig,
    data: &train::RunData,
    device: &burn::tensor::Device,
    world: &dyn Collective,
) -> String {
    let note = match start {
        Start::Resume => "resumed",
        Start::Fresh => "started",
    };
    let draws_points =
        config.mix.draws_points() || config.switch.is_some_and(|s| s.mode.draws_points());
    let mixing = match config.mix {
        MixMode::None => "no mixing".to_string(),
        _ if draws_points => format!("mix {} layers {:?}", config.mix_label(), config.mix_layers),
        _ => format!("mix {}", config.mix_label()),
    };
    let arithmetic = crate::kernels::convolution_route(device, config.precision)
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
    let unlabeled = data
        .unlabeled
        .as_ref()
        .map(|set| format!(" + {} unlabelled", set.len()))
        .unwrap_or_default();
    format!(
        "{note} {} on {} ({} train{unlabeled} / {} valid / {} test), {mixing}, {} epochs, seed {}, device {}{arithmetic}{ranks}",
        config.model,
        config.dataset,
        data.train.len(),
        data.valid.as_ref().map_or(0, |v| v.len()),
        data.dataset.test.len(),
        config.epochs,
        config.seed,
        config.device
    )
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
    if let Some(t) = &s.teacher_final {
        println!(
            "mean teacher: test_acc {:.2}% test_nll {:.4} test_ece {:.2}% (the final numbers and evaluation are the student's)",
            t.test_acc * 100.0,
            t.test_nll,
            t.test_ece * 100.0
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
    use crate::train::TrainOptions;

    #[test]
    fn a_refusal_names_every_option_it_mentions_as_a_flag() {
        let options = TrainOptions {
            batch_size: Some(2),
            partner_groups: Some(3),
            ..TrainOptions::default()
        };
        let error = super::flag_error(options.resolve(1).unwrap_err());
        assert_eq!(
            error.to_string(),
            "--batch-size (2) is smaller than --partner-groups (3, by default one per rank): each group needs an example"
        );
        let unknown = TrainOptions::from_toml("learning-rate = 1").unwrap_err();
        assert!(
            super::flag_error(unknown)
                .to_string()
                .contains("`learning-rate`"),
            "a TOML file's keys stay keys"
        );
    }
}
