//! The training loop, top to bottom: data, model, optimizer, then epochs of mixed steps,
//! evaluation and a checkpoint.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;

use super::checkpoint::{self, CheckpointFiles, EpochRecord, PartialEpoch, RunState};
use super::trace::StepTrace;
use super::{TrainConfig, TrainError};
use crate::data::{Augmentation, Dataset, ImageSet, LoadOptions, Normalization, assemble_batch};
use crate::distributed::Collective;
use crate::eval::suite::images_tensor;
use crate::eval::{Metrics, MetricsAccumulator, predicted_class};
use crate::mixup::{
    Loss, MixPoint, Mixable, MixupError, TensorMix, mixed_forward, mixed_loss, mixed_targets,
    smooth,
};
use crate::models::{Classifier, ModelConfig, to_safetensors};

/// What the loop reports as it goes; the CLI turns it into a bar or log lines.
pub enum Progress<'a> {
    EpochStart {
        epoch: usize,
        batches: usize,
    },
    Batch {
        done: usize,
        batches: usize,
        loss: f64,
    },
    EpochEnd(&'a EpochRecord),
    /// Before the first step of a fresh run; `weights` gives its initial weights as
    /// safetensors bytes with PyTorch's names.
    Start {
        weights: &'a dyn Fn() -> Result<Vec<u8>, String>,
    },
    /// After every optimizer step: what it drew, its learning rate and loss, and (from
    /// `weights`) the weights it left.
    Step {
        trace: &'a StepTrace,
        weights: &'a dyn Fn() -> Result<Vec<u8>, String>,
    },
}

/// The data of a run after splitting, with the statistics it was normalised by.
pub struct RunData {
    pub dataset: Dataset,
    pub train: ImageSet,
    pub valid: Option<ImageSet>,
    pub normalization: Normalization,
    pub augmentation: Augmentation,
}

/// The split has its own RNG stream of the run's seed, so it does not depend on anything the
/// training stream does, and evaluation can rebuild it from the config alone.
const SPLIT_STREAM: u64 = 1;

pub fn prepare_data(config: &TrainConfig) -> Result<RunData, TrainError> {
    let dataset = crate::data::load(
        config.dataset,
        &LoadOptions {
            data_dir: config.data_dir.clone(),
            image_size: config.image_size,
            cifar100_labels_coarse: config.cifar100_labels_coarse,
        },
    )?;
    let mut split_rng = ChaCha12Rng::seed_from_u64(config.split_seed.unwrap_or(config.seed));
    split_rng.set_stream(SPLIT_STREAM);
    let split = crate::data::split(
        &dataset.train,
        dataset.classes(),
        &config.split,
        &mut split_rng,
    )?;
    let mut dataset = dataset;
    if let Some(size) = config.pad_to {
        let images = (dataset.train.len() + dataset.test.len()) * dataset.train.channels;
        crate::machine::check_fits(
            format!("{} at --pad-to {size}", config.dataset),
            (images as u64).saturating_mul((size * size) as u64),
            "lower --pad-to",
        )?;
        dataset.train = dataset.train.padded(size)?;
        dataset.test = dataset.test.padded(size)?;
    }
    let train = dataset.train.select(&split.train);
    let valid = (!split.valid.is_empty()).then(|| dataset.train.select(&split.valid));
    let (mean, std) = train.channel_stats();
    let augmentation = if config.augment {
        dataset.default_augmentation()
    } else {
        Augmentation::none()
    };
    Ok(RunData {
        dataset,
        train,
        valid,
        normalization: Normalization { mean, std },
        augmentation,
    })
}

fn model_config(config: &TrainConfig, data: &RunData) -> ModelConfig {
    let (channels, size) = (data.train.channels, data.train.size);
    ModelConfig::new(config.model, channels, size, data.dataset.classes()).with_width(config.width)
}

pub fn build_model(
    config: &TrainConfig,
    data: &RunData,
    device: &Device,
) -> Result<Classifier, TrainError> {
    Ok(model_config(config, data).init(device)?)
}

/// Everything that can be checked before a run folder is written: the model against the
/// data's shape, and the mixing against the model's mix points.
pub fn check_run(config: &TrainConfig, data: &RunData) -> Result<(), TrainError> {
    let model = model_config(config, data);
    model.validate()?;
    check_mixing(config, &config.model.mix_points())?;
    let needed = model.training_bytes_lower_bound(config.batch_size)?;
    crate::machine::check_fits(
        format!(
            "{} at --width {} and --batch-size {} on {}×{} images",
            config.model, config.width, config.batch_size, data.train.size, data.train.size
        ),
        needed,
        "lower --width, --batch-size or --image-size",
    )?;
    // Evaluation holds one batch of a split's images at a time, never more than the split.
    let largest_split = [
        Some(data.train.len()),
        data.valid.as_ref().map(ImageSet::len),
        Some(data.dataset.test.len()),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    let eval_rows = config.eval_batch_size.min(largest_split).max(1);
    crate::machine::check_fits(
        format!(
            "{} at --width {} and --eval-batch-size {} on {}×{} images",
            config.model, config.width, config.eval_batch_size, data.train.size, data.train.size
        ),
        model.training_bytes_lower_bound(eval_rows)?,
        "lower --eval-batch-size, --width or --image-size",
    )?;
    Ok(())
}

/// The mixing and the evaluation suite against a model's mix points.
fn check_mixing(config: &TrainConfig, points: &[MixPoint]) -> Result<(), TrainError> {
    config.mix_config().validate(points, config.epochs)?;
    config.evaluate.validate(points.len().saturating_sub(1))?;
    Ok(())
}

pub fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    // PyTorch's SGD: no dampening (Burn defaults to 0.1), L2 weight decay on the gradient.
    let momentum = (config.momentum > 0.0).then(|| {
        MomentumConfig::new()
            .with_momentum(config.momentum)
            .with_dampening(0.0)
            .with_nesterov(config.nesterov)
    });
    let decay =
        (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32));
    SgdConfig::new()
        .with_momentum(momentum)
        .with_weight_decay(decay)
        .init()
}

/// Evaluates `model` (in evaluation mode) on a whole split.
pub fn evaluate<M: Mixable>(
    model: &M,
    set: &ImageSet,
    normalization: &Normalization,
    batch_size: usize,
    device: &Device,
) -> Metrics {
    crate::eval::suite::accumulate(model, set, normalization, batch_size, device).finish()
}

/// The mixed targets' weight on each predicted class, summed over the batch: for one mix,
/// λ·[ŷ = y] + (1−λ)·[ŷ = y_partner].
fn mixup_hits(logits: &[f32], targets: &[f64], classes: usize) -> f64 {
    logits
        .chunks_exact(classes)
        .zip(targets.chunks_exact(classes))
        .map(|(row, target)| target[predicted_class(row)])
        .sum()
}

/// One batch's mixed forward pass and its loss, not yet differentiated: what every train step
/// computes, in the loop and in `mmix bench` alike.
pub struct BatchLoss {
    /// The loss against the (smoothed) soft targets.
    pub loss: Tensor<1>,
    pub logits: Tensor<2>,
    /// The soft targets of the mixes the forward pass applied, before label smoothing,
    /// row-major `[batch, classes]`.
    pub targets: Vec<f64>,
}

/// The model's logits for `images` with the plan's mixes applied at its points, the soft
/// targets of what was applied, and the `loss` against them smoothed by `label_smoothing`.
pub fn batch_loss<M: Mixable>(
    model: &M,
    images: Tensor<4>,
    labels: &[usize],
    mix: Option<&TensorMix>,
    classes: usize,
    (loss, label_smoothing): (Loss, f64),
) -> Result<BatchLoss, MixupError> {
    let device = images.device();
    let (logits, applied) = mixed_forward(model, images, mix)?;
    let targets = mixed_targets(labels, applied.as_ref(), classes);
    let smoothed = Tensor::from_data(
        TensorData::new(
            smooth(&targets, classes, label_smoothing),
            [labels.len(), classes],
        ),
        &device,
    );
    Ok(BatchLoss {
        loss: mixed_loss(logits.clone(), smoothed, loss),
        logits,
        targets,
    })
}

/// Nothing that is not a number may become a checkpoint./// Nothing that is not a number may become a checkpoint.
fn ensure_finite<M: Mixable>(model: &M, epoch: usize) -> Result<(), TrainError> {
    if crate::models::all_finite(model) {
        Ok(())
    } else {
        Err(TrainError::Diverged {
            epoch: epoch + 1,
            what: "weights",
        })
    }
}

/// How a call to [`run_training`] ended.
pub enum RunOutcome {
    Finished(RunState),
    /// Stopped by the interrupt flag after a checkpoint.
    Interrupted(RunState),
}

/// Trains from scratch, or continues from the checkpoint in `checkpoint_dir` if it has one.
///
/// `interrupt` is polled after each batch: when set, the loop finishes that batch, writes a
/// mid-epoch checkpoint and returns [`RunOutcome::Interrupted`]. `after_epoch` sees the state
/// after every committed checkpoint, and an epoch's end it resumes from, for the run's reports.
pub fn run_training(
    config: &TrainConfig,
    data: &RunData,
    device: &Device,
    checkpoint_dir: &Path,
    interrupt: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
    after_epoch: &mut dyn FnMut(&RunState, &Classifier) -> Result<(), TrainError>,
) -> Result<RunOutcome, TrainError> {
    // The mixing is checked against the built model's points, in `run_training_with`.
    model_config(config, data).validate()?;
    let init = |device: &Device| build_model(config, data, device);
    run_training_with(
        config,
        data,
        device,
        &init,
        checkpoint_dir,
        interrupt,
        progress,
        after_epoch,
    )
}

/// [`run_training`] for any [`Mixable`] model, built by `init` on the device it is given
/// (the run's seed is set on it first, so the initial weights are the run's). The config's
/// model and width are not used; everything else is, as for a built-in model.
///
/// Under a data-parallel launch ([`crate::distributed::world`] of several ranks) every rank
/// calls this with the same config: each trains on its share of every global batch, and
/// only rank 0 reports progress, writes checkpoints and calls `after_epoch`.
#[allow(clippy::too_many_arguments)]
pub fn run_training_with<M: Mixable>(
    config: &TrainConfig,
    data: &RunData,
    device: &Device,
    init: &dyn Fn(&Device) -> Result<M, TrainError>,
    checkpoint_dir: &Path,
    interrupt: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
    after_epoch: &mut dyn FnMut(&RunState, &M) -> Result<(), TrainError>,
) -> Result<RunOutcome, TrainError> {
    let world = crate::distributed::world();
    let leader = world.rank() == 0;
    let classes = data.dataset.classes();
    crate::kernels::use_precision(config.precision, device).map_err(TrainError::Config)?;
    let mix = config.mix_config();
    let batch_size = config.batch_size.min(data.train.len());
    crate::distributed::check_split(batch_size, mix.partner_groups, world.size())?;

    let train_device = device.clone().autodiff();
    let model = {
        // The device's random generator is the process's: rank threads sharing it
        // (`--devices`) must not draw while another rank builds its model from the seed.
        static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _alone = SEEDED_INIT.lock().unwrap_or_else(|p| p.into_inner());
        device.seed(config.seed);
        // Burn draws a layer's initial weights when they are first read; read them all now,
        // in the model's order, while this rank holds the generator.
        crate::models::initialize_lazy_parameters(init(&train_device)?)
    };
    check_mixing(config, &model.mix_points())?;
    let mut model = crate::distributed::sync::broadcast_model(world, model)
        .map_err(|reason| TrainError::Config(format!("rank 0's initial model: {reason}")))?;
    let mut optim = optimizer(config);
    let mut state = RunState {
        epochs_done: 0,
        rng: ChaCha12Rng::seed_from_u64(config.seed),
        history: Vec::new(),
        train_seconds: 0.0,
        train_images: 0,
        partial: None,
    };
    if let Some(files) = read_latest_checkpoint(world, checkpoint_dir)? {
        let folder = files.folder.clone();
        (model, optim, state) = files.decode(model, optim)?;
        if let Some(partial) = &state.partial
            && partial.order.len() != data.train.len()
        {
            return Err(TrainError::Checkpoint {
                path: folder.join("state.json"),
                reason: format!(
                    "its epoch orders {} examples, the run has {}",
                    partial.order.len(),
                    data.train.len()
                ),
            });
        }
        // A run stopped between an epoch's checkpoint and its reports would otherwise keep
        // the reports (and weights file) of the epoch before.
        if state.partial.is_none() && state.epochs_done > 0 {
            on_leader(world, || after_epoch(&state, &model))?;
        }
    }

    let batches = data.train.len().div_ceil(batch_size);
    let mut progress = |event: Progress| {
        if leader {
            progress(event)
        }
    };
    if state.epochs_done == 0 && state.partial.is_none() {
        progress(Progress::Start {
            weights: &|| to_safetensors(&model),
        });
    }
    while state.epochs_done < config.epochs {
        let epoch = state.epochs_done;
        let lr = config
            .schedule
            .lr(config.lr, config.gamma, epoch, config.epochs);
        let mut partial = match state.partial.take() {
            Some(partial) => partial,
            None => {
                let mut order: Vec<usize> = (0..data.train.len()).collect();
                order.shuffle(&mut state.rng);
                PartialEpoch {
                    order,
                    next_batch: 0,
                    loss_sum: 0.0,
                    acc_sum: 0.0,
                    seen: 0,
                    seconds: 0.0,
                }
            }
        };
        progress(Progress::EpochStart {
            epoch: epoch + 1,
            batches,
        });
        let started = Instant::now();
        let seconds_before = partial.seconds;
        while partial.next_batch < batches {
            let b = partial.next_batch;
            // Every rank draws the whole global batch's randomness, then takes its rows.
            let indices =
                &partial.order[b * batch_size..((b + 1) * batch_size).min(partial.order.len())];
            let placements = data.augmentation.placements(indices.len(), &mut state.rng);
            let plan = mix.draw(&mut state.rng, indices.len(), epoch, config.epochs);
            let rows = crate::distributed::shard(indices.len(), world.size(), world.rank());
            let mut batch = assemble_batch(
                &data.train,
                &indices[rows.clone()],
                &data.normalization,
                Some(&placements[rows.clone()]),
            );
            let step_lr = config.schedule.lr_at(
                config.lr,
                config.gamma,
                (epoch, config.epochs),
                (b, batches),
            );
            let mut trace = StepTrace {
                step: epoch * batches + b + 1,
                epoch: epoch + 1,
                lr: step_lr,
                indices: indices.to_vec(),
                placements: StepTrace::placements_of(&placements),
                plan: plan.clone(),
                loss: 0.0,
            };
            let plan = plan.map(|plan| {
                plan.rows(rows.clone())
                    .expect("a rank's rows are whole partner groups (checked by check_split)")
            });
            let tensor_mix = plan.as_ref().map(|p| TensorMix::new(p, &train_device));

            // This rank's loss sum, mixup hits, and whether its loss is not a number; then
            // the interrupt flag: summed over the ranks, so all stop at the same batch.
            let mut totals = [0.0, 0.0, 0.0, interrupt.load(Ordering::SeqCst) as u8 as f64];
            let mut step = None;
            if !batch.is_empty() {
                let images = images_tensor(&mut batch, &train_device);
                let BatchLoss {
                    loss,
                    logits,
                    targets,
                } = batch_loss(
                    &model,
                    images,
                    &batch.labels,
                    tensor_mix.as_ref(),
                    classes,
                    (config.loss, config.label_smoothing),
                )?;
                let loss_value = loss.clone().into_scalar::<f32>() as f64;
                let logits = logits
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("logits are f32");
                totals[0] = loss_value * batch.len() as f64;
                totals[1] = mixup_hits(&logits, &targets, classes);
                totals[2] = !loss_value.is_finite() as u8 as f64;
                step = Some(loss);
            }
            world.sum_f64(&mut totals);
            let [loss_sum, hits, non_finite, interrupted] = totals;
            if non_finite > 0.0 {
                return Err(TrainError::NonFinite {
                    epoch: epoch + 1,
                    batch: b + 1,
                    loss: loss_sum / indices.len() as f64,
                });
            }
            let mut grads = match step {
                Some(loss) => GradientsParams::from_grads(loss.backward(), &model),
                None => GradientsParams::new(),
            };
            if world.size() > 1 {
                grads = crate::distributed::sync::all_reduce_gradients(
                    world,
                    &model,
                    grads,
                    batch.len(),
                    indices.len(),
                    device,
                );
            }
            model = optim.step(step_lr, model, grads);
            trace.loss = loss_sum / indices.len() as f64;
            progress(Progress::Step {
                trace: &trace,
                weights: &|| to_safetensors(&model),
            });

            partial.acc_sum += hits;
            partial.loss_sum += loss_sum;
            partial.seen += indices.len();
            partial.next_batch += 1;
            progress(Progress::Batch {
                done: partial.next_batch,
                batches,
                loss: partial.loss_sum / partial.seen as f64,
            });

            if interrupted > 0.0 && partial.next_batch < batches {
                model = crate::distributed::sync::average_running_statistics(world, model);
                ensure_finite(&model, epoch)?;
                partial.seconds = seconds_before + started.elapsed().as_secs_f64();
                state.partial = Some(partial);
                on_leader(world, || {
                    checkpoint::save(checkpoint_dir, &model, &optim, &state).map(drop)
                })?;
                return Ok(RunOutcome::Interrupted(state));
            }
        }
        let train_seconds = seconds_before + started.elapsed().as_secs_f64();
        model = crate::distributed::sync::average_running_statistics(world, model);
        crate::distributed::sync::check_in_step(world, &model).map_err(TrainError::Config)?;
        // The loss checked above comes before each step: the epoch's last update is checked here.
        ensure_finite(&model, epoch)?;

        let eval_started = Instant::now();
        let measured = config.evaluates_after(epoch + 1);
        let on = |set: &ImageSet| {
            evaluate_shared(
                world,
                &model,
                set,
                &data.normalization,
                config.eval_batch_size,
                device,
            )
        };
        let valid = data.valid.as_ref().filter(|_| measured).map(on);
        let test = measured.then(|| on(&data.dataset.test));
        let outputs_finite = valid
            .iter()
            .chain(test.iter())
            .all(|m| m.nll.is_finite() && m.ece.is_finite());
        if !outputs_finite {
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                what: "model's outputs",
            });
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: partial.loss_sum / partial.seen as f64,
            train_acc: partial.acc_sum / partial.seen as f64,
            valid,
            test,
            images_per_second: partial.seen as f64 / train_seconds,
            seconds: train_seconds + eval_started.elapsed().as_secs_f64(),
        };
        state.train_seconds += train_seconds;
        state.train_images += partial.seen;
        state.history.push(record);
        state.epochs_done += 1;
        on_leader(world, || {
            checkpoint::save(checkpoint_dir, &model, &optim, &state).map(drop)
        })?;
        progress(Progress::EpochEnd(
            state.history.last().expect("just pushed"),
        ));
        on_leader(world, || after_epoch(&state, &model))?;
        let interrupted = [interrupt.load(Ordering::SeqCst) as u8 as f64];
        if sum(world, interrupted) > 0.0 && state.epochs_done < config.epochs {
            return Ok(RunOutcome::Interrupted(state));
        }
    }
    Ok(RunOutcome::Finished(state))
}

fn sum<const N: usize>(world: &dyn Collective, mut values: [f64; N]) -> f64 {
    world.sum_f64(&mut values);
    values.iter().sum()
}

/// Runs `write` (a checkpoint, the reports) on rank 0 alone, and has every rank return its
/// outcome: a disk error on rank 0 stops all ranks with its message.
fn on_leader(
    world: &dyn Collective,
    write: impl FnOnce() -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let outcome = if world.rank() == 0 { write() } else { Ok(()) };
    Ok(crate::distributed::agree(world, outcome)?)
}

/// The newest checkpoint in `dir`, read by rank 0 and sent to every rank (ranks need not share
/// rank 0's disk); `None` for a fresh run.
fn read_latest_checkpoint(
    world: &dyn Collective,
    dir: &Path,
) -> Result<Option<CheckpointFiles>, TrainError> {
    let found = match world.rank() {
        0 => checkpoint::latest(dir)
            .and_then(|folder| folder.as_deref().map(checkpoint::read).transpose()),
        _ => Ok(None),
    };
    let found = crate::distributed::agree(world, found)?;
    if world.size() == 1 {
        return Ok(found);
    }
    let bytes = found
        .as_ref()
        .map(CheckpointFiles::to_bytes)
        .unwrap_or_default();
    let bytes = crate::distributed::from_rank_zero(world, bytes);
    if bytes.is_empty() {
        return Ok(None);
    }
    CheckpointFiles::from_bytes(&bytes)
        .map(Some)
        .ok_or_else(|| TrainError::Config("rank 0's checkpoint arrived damaged".into()))
}

/// [`evaluate`] with the set shared out among the ranks and their sums added up; every rank
/// gets the whole set's metrics.
fn evaluate_shared<M: Mixable>(
    world: &dyn Collective,
    model: &M,
    set: &ImageSet,
    normalization: &Normalization,
    batch_size: usize,
    device: &Device,
) -> Metrics {
    if world.size() == 1 {
        return evaluate(model, set, normalization, batch_size, device);
    }
    let rows = crate::distributed::shard(set.len(), world.size(), world.rank());
    let indices: Vec<usize> = rows.collect();
    let part = crate::eval::suite::accumulate_rows(
        model,
        set,
        &indices,
        normalization,
        batch_size,
        device,
    );
    let mut sums = part.to_sums();
    world.sum_f64(&mut sums);
    MetricsAccumulator::from_sums(&sums).finish()
}
