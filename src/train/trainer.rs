//! The training loop, top to bottom: [`Trainer::run`] builds (or resumes) the model, then runs
//! epochs; an epoch runs train steps, then evaluates and commits a checkpoint; a step draws
//! the batch's randomness, runs the mixed forward pass and its loss, and updates the weights.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;

use super::checkpoint::{self, CheckpointFiles, EpochRecord, PartialEpoch, RunState};
use super::ranks::Ranks;
use super::run_dir::RunDir;
use super::semi::UnlabeledDraw;
use super::setup::{RunData, build_model, check_mixing, optimizer};
use super::step::{batch_loss, mixup_hits};
use super::teacher::MeanTeacher;
use super::trace::StepTrace;
use super::{SemiState, TrainConfig, TrainError};
use crate::data::{Batch, ImageSet, Placement, assemble_batch};
use crate::eval::suite::images_tensor;
use crate::mixup::{MixConfig, MixPlan, Mixable, TensorMix, interpolation_consistency};
use crate::models::{Classifier, to_safetensors};

/// What the loop reports as it goes; the CLI turns it into a bar or log lines.
pub enum Progress<'a> {
    /// An epoch begins.
    EpochStart {
        /// The epoch, from 1.
        epoch: usize,
        /// Batches in it.
        batches: usize,
    },
    /// A batch is done.
    Batch {
        /// Batches done in the epoch.
        done: usize,
        /// Batches in it.
        batches: usize,
        /// Mean loss of the epoch so far.
        loss: f64,
    },
    /// An epoch ended, with its record.
    EpochEnd(&'a EpochRecord),
    /// Before the first step of a fresh run; `weights` gives its initial weights as
    /// safetensors bytes with PyTorch's names.
    Start {
        /// The initial weights, serialised on demand.
        weights: &'a dyn Fn() -> Result<Vec<u8>, String>,
    },
    /// After every optimizer step: what it drew, its learning rate and loss, and (from
    /// `weights`) the weights it left.
    Step {
        /// The step.
        trace: &'a StepTrace,
        /// The weights after the step, serialised on demand.
        weights: &'a dyn Fn() -> Result<Vec<u8>, String>,
    },
}

/// How a call to [`Trainer::run`] ended.
pub enum RunOutcome {
    /// Every epoch done.
    Finished(RunState),
    /// Stopped by the interrupt flag after a checkpoint.
    Interrupted(RunState),
}

impl RunOutcome {
    /// The state the run ended in, finished or not.
    pub fn state(self) -> RunState {
        match self {
            RunOutcome::Finished(state) | RunOutcome::Interrupted(state) => state,
        }
    }
}

type Init<'a, M> = Box<dyn Fn(&Device) -> Result<M, TrainError> + 'a>;
type AfterEpoch<'a, M> = Box<dyn FnMut(&RunState, &M) -> Result<(), TrainError> + 'a>;

/// Trains one run: from scratch, or on from the newest checkpoint in its checkpoint folder.
///
/// ```no_run
/// # use manifold_mixup::train::{self, Trainer, TrainConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = TrainConfig::default().with_epochs(3);
/// let data = train::prepare_data(&config)?;
/// let device = burn::tensor::Device::flex();
/// let state = Trainer::new(&config, &data, &device)
///     .checkpoints("runs/demo/checkpoint")
///     .on_progress(|_| {})
///     .run()?
///     .state();
/// # Ok(()) }
/// ```
///
/// Under a data-parallel launch ([`crate::distributed::world`] of several ranks) every rank
/// runs the same trainer: each trains on its share of every global batch, and only rank 0
/// reports progress, writes checkpoints and calls `after_epoch`.
pub struct Trainer<'a, M: Mixable> {
    config: &'a TrainConfig,
    data: &'a RunData,
    device: Device,
    init: Init<'a, M>,
    checkpoints: Option<PathBuf>,
    teacher_weights: Option<PathBuf>,
    interrupt: Option<&'a AtomicBool>,
    progress: Box<dyn FnMut(Progress) + 'a>,
    after_epoch: AfterEpoch<'a, M>,
}

impl<'a> Trainer<'a, Classifier> {
    /// A trainer of the config's built-in model.
    pub fn new(config: &'a TrainConfig, data: &'a RunData, device: &Device) -> Self {
        Self::with_model(config, data, device, move |device: &Device| {
            build_model(config, data, device)
        })
    }
}

impl<'a, M: Mixable> Trainer<'a, M> {
    /// A trainer of any [`Mixable`] model, built by `init` on the device it is given (the
    /// run's seed is set on it first, so the initial weights are the run's). The config's
    /// model and width are not used; everything else is, as for a built-in model.
    pub fn with_model(
        config: &'a TrainConfig,
        data: &'a RunData,
        device: &Device,
        init: impl Fn(&Device) -> Result<M, TrainError> + 'a,
    ) -> Self {
        Self {
            config,
            data,
            device: device.clone(),
            init: Box::new(init),
            checkpoints: None,
            teacher_weights: None,
            interrupt: None,
            progress: Box::new(|_| {}),
            after_epoch: Box::new(|_, _| Ok(())),
        }
    }

    /// Where checkpoints go, and the run continues from. Without one the run keeps none.
    pub fn checkpoints(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoints = Some(dir.into());
        self
    }

    /// Where a semi-supervised run writes its mean teacher's weights (safetensors, PyTorch
    /// names) after each epoch. Without one it writes none; its checkpoints hold the teacher
    /// either way.
    pub fn teacher_weights(mut self, path: impl Into<PathBuf>) -> Self {
        self.teacher_weights = Some(path.into());
        self
    }

    /// Polled after each batch: once set, the loop finishes that batch, writes a mid-epoch
    /// checkpoint and returns [`RunOutcome::Interrupted`].
    pub fn interrupt(mut self, flag: &'a AtomicBool) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Receives the loop's [`Progress`] (on rank 0).
    pub fn on_progress(mut self, progress: impl FnMut(Progress) + 'a) -> Self {
        self.progress = Box::new(progress);
        self
    }

    /// Called with the state after every committed checkpoint, and with the epoch's end a
    /// run resumes from, for the run's reports.
    pub fn after_epoch(
        mut self,
        after_epoch: impl FnMut(&RunState, &M) -> Result<(), TrainError> + 'a,
    ) -> Self {
        self.after_epoch = Box::new(after_epoch);
        self
    }

    /// Checkpoints in `run`'s folder, and its weights and reports written after each epoch.
    pub fn write_to(self, run: &'a RunDir) -> Self {
        let config = self.config;
        self.checkpoints(run.checkpoints())
            .teacher_weights(run.teacher_weights())
            .after_epoch(move |state, model| run.write_epoch(config, state, model))
    }

    /// Trains until the last epoch, or until interrupted.
    pub fn run(self) -> Result<RunOutcome, TrainError> {
        let config = self.config;
        let ranks = Ranks::of_this_thread();
        crate::kernels::use_precision(config.precision, &self.device)
            .map_err(TrainError::Config)?;
        let mix = config.mix_config();
        let batch_size = config.batch_size.min(self.data.train.len());
        crate::distributed::check_split(batch_size, mix.partner_groups, ranks.count())?;
        if let Some(semi) = &config.semi {
            crate::distributed::check_split(semi.batch_size, mix.partner_groups, ranks.count())?;
        }
        let mut run = Run {
            config,
            data: self.data,
            train_device: self.device.clone().autodiff(),
            device: self.device,
            ranks,
            mix,
            batch_size,
            batches: self.data.train.len().div_ceil(batch_size),
            checkpoints: self.checkpoints,
            teacher_weights: self.teacher_weights,
            interrupt: self.interrupt,
            progress: self.progress,
            after_epoch: self.after_epoch,
            teacher: None,
        };
        run.train(&*self.init)
    }
}

/// A run under way: the trainer's parts and what was derived from them.
struct Run<'a, M: Mixable> {
    config: &'a TrainConfig,
    data: &'a RunData,
    device: Device,
    train_device: Device,
    ranks: Ranks,
    mix: MixConfig,
    /// The global batch: every rank draws its randomness and trains on its rows of it.
    batch_size: usize,
    batches: usize,
    checkpoints: Option<PathBuf>,
    teacher_weights: Option<PathBuf>,
    interrupt: Option<&'a AtomicBool>,
    progress: Box<dyn FnMut(Progress) + 'a>,
    after_epoch: AfterEpoch<'a, M>,
    /// A semi-supervised run's mean teacher.
    teacher: Option<MeanTeacher<M>>,
}

/// One batch's draws: its examples (the global batch), their augmentation and mixes, and
/// this rank's rows, assembled and with the mixes as tensors.
struct DrawnBatch {
    indices: Vec<usize>,
    placements: Vec<Placement>,
    plan: Option<MixPlan>,
    rows: std::ops::Range<usize>,
    batch: Batch,
    mix: Option<TensorMix>,
}

impl DrawnBatch {
    /// What the step drew, for `--trace` (moved, not copied: the step needs only the
    /// batch, the mixes and the counts after this); its loss is filled in after the step.
    fn take_trace(&mut self, step: usize, epoch: usize, lr: f64) -> StepTrace {
        StepTrace {
            step,
            epoch,
            lr,
            indices: std::mem::take(&mut self.indices),
            placements: StepTrace::placements_of(&self.placements),
            plan: self.plan.take(),
            loss: 0.0,
        }
    }
}

/// What one step adds to its epoch's sums, over all ranks.
struct StepSums {
    images: usize,
    loss: f64,
    hits: f64,
    interrupted: bool,
}

/// How an epoch's training part ended.
enum EpochEnd<M> {
    Trained {
        model: M,
        epoch: PartialEpoch,
    },
    /// Interrupted mid-epoch, after its checkpoint.
    Interrupted,
}

impl<M: Mixable> Run<'_, M> {
    fn train(
        &mut self,
        init: &dyn Fn(&Device) -> Result<M, TrainError>,
    ) -> Result<RunOutcome, TrainError> {
        let mut model = self.initial_model(init)?;
        let mut optim = optimizer(self.config);
        let mut state = RunState {
            epochs_done: 0,
            rng: ChaCha12Rng::seed_from_u64(self.config.seed),
            history: Vec::new(),
            train_seconds: 0.0,
            train_images: 0,
            partial: None,
            semi: self
                .config
                .semi
                .as_ref()
                .map(|_| SemiState::new(self.config.seed)),
            config: super::checkpoint::config_record(self.config),
        };
        if let Some(semi) = &self.config.semi {
            self.teacher = Some(MeanTeacher::new(&model, semi.ema_decay));
        }
        if let Some(files) = self.latest_checkpoint()? {
            (model, optim, state) = self.resume(files, model, optim)?;
        }
        if state.epochs_done == 0 && state.partial.is_none() {
            self.report(Progress::Start {
                weights: &|| to_safetensors(&model),
            });
        }
        while state.epochs_done < self.config.epochs {
            let (trained, epoch) = match self.train_epoch(model, &mut optim, &mut state)? {
                EpochEnd::Trained { model, epoch } => (model, epoch),
                EpochEnd::Interrupted => return Ok(RunOutcome::Interrupted(state)),
            };
            model = self.end_epoch(trained, &optim, &mut state, epoch)?;
            let interrupted = self.ranks.sum([self.interrupted()]);
            if interrupted[0] > 0.0 && state.epochs_done < self.config.epochs {
                return Ok(RunOutcome::Interrupted(state));
            }
        }
        Ok(RunOutcome::Finished(state))
    }

    /// The model `init` builds from the run's seed, the same on every rank.
    fn initial_model(
        &self,
        init: &dyn Fn(&Device) -> Result<M, TrainError>,
    ) -> Result<M, TrainError> {
        let model = {
            // The device's random generator is the process's: rank threads sharing it
            // (`--devices`) must not draw while another rank builds its model from the seed.
            static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _alone = SEEDED_INIT.lock().unwrap_or_else(|p| p.into_inner());
            self.device.seed(self.config.seed);
            // Burn draws a layer's initial weights when they are first read; read them all
            // now, in the model's order, while this rank holds the generator.
            crate::models::initialize_lazy_parameters(init(&self.train_device)?)
        };
        check_mixing(self.config, &model.mix_points())?;
        self.ranks.share_initial_model(model)
    }

    fn latest_checkpoint(&self) -> Result<Option<CheckpointFiles>, TrainError> {
        match &self.checkpoints {
            Some(dir) => self.ranks.latest_checkpoint(dir),
            None => Ok(None),
        }
    }

    /// The model, optimizer and state of a checkpoint of this run.
    fn resume(
        &mut self,
        files: CheckpointFiles,
        model: M,
        optim: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, RunState), TrainError> {
        let folder = files.folder.clone();
        if let Some(semi) = &self.config.semi {
            let teacher = files.decode_teacher(model.clone())?;
            let state =
                super::checkpoint::state_from_bytes(&folder.join("state.json"), &files.state)?;
            let pool = self.data.unlabeled.as_ref().map_or(0, |set| set.len());
            let stream = state
                .semi
                .as_ref()
                .ok_or("it holds no unlabelled stream".to_string());
            if let Err(reason) = stream.and_then(|stream| stream.check(pool)) {
                return Err(TrainError::Checkpoint {
                    path: folder.join("state.json"),
                    reason,
                });
            }
            let updates = state.semi.as_ref().map_or(0, |s| s.teacher_updates);
            self.teacher = Some(MeanTeacher::resume(teacher, semi.ema_decay, updates));
        }
        let (model, optim, mut state) = files.decode(model, optim)?;
        let now = super::checkpoint::config_record(self.config);
        if let (Some(saved), Some(now)) = (&state.config, &now) {
            let keys = super::checkpoint::differing_keys(saved, now);
            if !keys.is_empty() {
                return Err(TrainError::Checkpoint {
                    path: folder.join("state.json"),
                    reason: format!(
                        "the run trained under another configuration than config.json now holds ({} differ{}): restore config.json, or start a new run with the new values",
                        keys.join(", "),
                        if keys.len() == 1 { "s" } else { "" }
                    ),
                });
            }
        }
        state.config = now;
        if let Some(partial) = &state.partial
            && partial.order.len() != self.data.train.len()
        {
            return Err(TrainError::Checkpoint {
                path: folder.join("state.json"),
                reason: format!(
                    "its epoch orders {} examples, the run has {}",
                    partial.order.len(),
                    self.data.train.len()
                ),
            });
        }
        // A run stopped between an epoch's checkpoint and its reports would otherwise keep
        // the reports (and weights file) of the epoch before.
        if state.partial.is_none() && state.epochs_done > 0 {
            let after_epoch = &mut self.after_epoch;
            self.ranks.on_leader(|| after_epoch(&state, &model))?;
        }
        Ok((model, optim, state))
    }

    /// Trains the epoch after `state`'s last (or the rest of it, from a mid-epoch checkpoint).
    fn train_epoch(
        &mut self,
        mut model: M,
        optim: &mut ModuleOptimizer,
        state: &mut RunState,
    ) -> Result<EpochEnd<M>, TrainError> {
        let epoch = state.epochs_done;
        let mut partial = match state.partial.take() {
            Some(partial) => partial,
            None => {
                let mut order: Vec<usize> = (0..self.data.train.len()).collect();
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
        let batches = self.batches;
        self.report(Progress::EpochStart {
            epoch: epoch + 1,
            batches,
        });
        let started = Instant::now();
        let seconds_before = partial.seconds;
        while partial.next_batch < batches {
            let sums;
            (model, sums) = self.train_step(
                model,
                optim,
                state,
                &partial.order,
                epoch,
                partial.next_batch,
            )?;
            partial.acc_sum += sums.hits;
            partial.loss_sum += sums.loss;
            partial.seen += sums.images;
            partial.next_batch += 1;
            self.report(Progress::Batch {
                done: partial.next_batch,
                batches,
                loss: partial.loss_sum / partial.seen as f64,
            });
            if sums.interrupted && partial.next_batch < batches {
                model = self.ranks.average_statistics(model);
                ensure_finite(&model, epoch)?;
                partial.seconds = seconds_before + started.elapsed().as_secs_f64();
                state.partial = Some(partial);
                self.save_checkpoint(&model, optim, state)?;
                return Ok(EpochEnd::Interrupted);
            }
        }
        partial.seconds = seconds_before + started.elapsed().as_secs_f64();
        Ok(EpochEnd::Trained {
            model,
            epoch: partial,
        })
    }

    /// The indices of batch `b` in the epoch's `order`.
    fn batch_rows<'o>(&self, order: &'o [usize], b: usize) -> &'o [usize] {
        &order[b * self.batch_size..((b + 1) * self.batch_size).min(order.len())]
    }

    /// One optimizer step on batch `b` of `epoch`.
    fn train_step(
        &mut self,
        model: M,
        optim: &mut ModuleOptimizer,
        state: &mut RunState,
        order: &[usize],
        epoch: usize,
        b: usize,
    ) -> Result<(M, StepSums), TrainError> {
        let config = self.config;
        let mut drawn = self.draw_batch(&mut state.rng, order, epoch, b);
        let (images, rows) = (drawn.indices.len(), drawn.rows.len());
        let lr = config.schedule.lr_at(
            config.lr,
            config.lr_decay,
            (epoch, config.epochs),
            (b, self.batches),
        );
        let mut trace = drawn.take_trace(epoch * self.batches + b + 1, epoch + 1, lr);
        let (loss, mut local) = self.local_loss(&model, drawn.batch, drawn.mix.as_ref())?;
        // Every rank draws the unlabelled batch, so that the streams stay in step even where
        // a rank holds no labelled rows of a short last batch.
        let unlabeled = config
            .semi
            .as_ref()
            .map(|semi| self.draw_unlabeled(state, semi));
        // A semi-supervised rank weighs its terms itself, by its shares of the labelled and of
        // the unlabelled batch, so that a rank with no labelled rows still adds its
        // consistency; the gradients are then summed as they stand.
        let (loss, shares) = match (&config.semi, unlabeled) {
            (Some(semi), Some(unlabeled)) => {
                let (consistency, (unlabeled_rows, unlabeled_images)) =
                    self.consistency(&model, unlabeled)?;
                let unlabeled_share = unlabeled_rows as f64 / unlabeled_images as f64;
                let weight = semi.weight_at(epoch, (b, self.batches)) * unlabeled_share;
                let value = consistency.clone().into_scalar::<f32>() as f64;
                local[0] += weight * value * images as f64;
                local[2] += !value.is_finite() as u8 as f64;
                let consistency = consistency.mul_scalar(weight);
                let loss = match loss {
                    Some(loss) => loss.mul_scalar(rows as f64 / images as f64) + consistency,
                    None => consistency,
                };
                (Some(loss), (1, 1))
            }
            _ => (loss, (rows, images)),
        };
        // This rank's loss sum, mixup hits and whether its loss is not a number, then the
        // interrupt flag: summed over the ranks, so all stop at the same batch.
        let [loss_sum, hits, non_finite, interrupted] =
            self.ranks
                .sum([local[0], local[1], local[2], self.interrupted()]);
        if non_finite > 0.0 {
            return Err(TrainError::NonFinite {
                epoch: epoch + 1,
                batch: b + 1,
                loss: loss_sum / images as f64,
            });
        }
        let grads = match loss {
            Some(loss) => GradientsParams::from_grads(loss.backward(), &model),
            None => GradientsParams::new(),
        };
        let grads = self
            .ranks
            .sum_gradients(&model, grads, shares, &self.device);
        let model = optim.step(lr, model, grads);
        if let (Some(teacher), Some(stream)) = (&mut self.teacher, &mut state.semi) {
            teacher.update(&model);
            stream.teacher_updates = teacher.updates();
        }
        trace.loss = loss_sum / images as f64;
        self.report(Progress::Step {
            trace: &trace,
            weights: &|| to_safetensors(&model),
        });
        let interrupted = interrupted > 0.0;
        let sums = StepSums {
            images,
            loss: loss_sum,
            hits,
            interrupted,
        };
        Ok((model, sums))
    }

    /// Batch `b`'s randomness, drawn whole by every rank (the augmentation, then the mixes),
    /// and this rank's rows of it.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: a rank's rows are whole partner groups (checked by check_split)"
    )]
    fn draw_batch(
        &self,
        rng: &mut ChaCha12Rng,
        order: &[usize],
        epoch: usize,
        b: usize,
    ) -> DrawnBatch {
        let data = self.data;
        let indices = self.batch_rows(order, b).to_vec();
        let placements = data.augmentation.placements(indices.len(), rng);
        let plan = self.mix.draw(rng, indices.len(), epoch, self.config.epochs);
        let rows = self.ranks.rows(indices.len());
        let batch = assemble_batch(
            &data.train,
            &indices[rows.clone()],
            &data.normalization,
            Some(&placements[rows.clone()]),
        );
        let mix = plan.as_ref().map(|plan| {
            let mine = plan
                .rows(rows.clone())
                .expect("a rank's rows are whole partner groups (checked by check_split)");
            TensorMix::new(&mine, &self.train_device)
        });
        DrawnBatch {
            indices,
            placements,
            plan,
            rows,
            batch,
            mix,
        }
    }

    /// The next unlabelled batch (the whole global batch), its augmentation and its mix.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: a semi-supervised run has its pool; a semi-supervised run has its stream"
    )]
    fn draw_unlabeled(&self, state: &mut RunState, semi: &super::SemiConfig) -> UnlabeledDraw {
        let data = self.data;
        let pool = data
            .unlabeled
            .as_ref()
            .expect("a semi-supervised run has its pool");
        let stream = state
            .semi
            .as_mut()
            .expect("a semi-supervised run has its stream");
        // Partners are drawn within each rank's rows, as in the labelled batch.
        let mix = MixConfig {
            partner_groups: self.mix.partner_groups,
            ..semi.mix_config(&self.config.mix_layers)
        };
        stream.draw(pool.len(), semi.batch_size, &data.augmentation, &mix)
    }

    /// Interpolation consistency on this rank's rows of the next unlabelled batch: the
    /// student's softmax at the mixed images against the softmax of the teacher's logits for
    /// the clean images, mixed as the images were; with this rank's rows and the batch's size.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: a semi-supervised run has its pool; a semi-supervised run has its teacher; a rank's rows are whole partner groups (checked by check_split)"
    )]
    fn consistency(
        &self,
        model: &M,
        drawn: UnlabeledDraw,
    ) -> Result<(Tensor<1>, (usize, usize)), TrainError> {
        let data = self.data;
        let pool = data
            .unlabeled
            .as_ref()
            .expect("a semi-supervised run has its pool");
        let rows = self.ranks.rows(drawn.indices.len());
        let pixels = crate::data::assemble_unlabeled(
            pool,
            &drawn.indices[rows.clone()],
            &data.normalization,
            &drawn.placements[rows.clone()],
        );
        let shape = [rows.len(), pool.channels, pool.size, pool.size];
        let images = Tensor::<4>::from_data(TensorData::new(pixels, shape), &self.device);
        let teacher = self
            .teacher
            .as_ref()
            .expect("a semi-supervised run has its teacher");
        let teacher_logits: Vec<f64> = teacher
            .model()
            .forward_mixed(images.clone(), None)
            .into_data()
            .iter::<f64>()
            .collect();
        let mix = drawn.plan.as_ref().map(|plan| {
            let mine = plan
                .rows(rows.clone())
                .expect("a rank's rows are whole partner groups (checked by check_split)");
            TensorMix::new(&mine, &self.train_device)
        });
        let student_images = Tensor::<4>::from_inner(images);
        let consistency =
            interpolation_consistency(model, student_images, teacher_logits, mix.as_ref())?;
        Ok((consistency, (rows.len(), drawn.indices.len())))
    }

    /// This rank's mixed forward pass and loss, not yet differentiated (`None` for a rank with
    /// no rows), and its sums: the loss over its rows, the mixup hits, and whether the loss is
    /// not a number.
    #[allow(clippy::expect_used, reason = "cannot fail: logits are f32")]
    fn local_loss(
        &self,
        model: &M,
        mut batch: Batch,
        mix: Option<&TensorMix>,
    ) -> Result<(Option<Tensor<1>>, [f64; 3]), TrainError> {
        if batch.is_empty() {
            return Ok((None, [0.0; 3]));
        }
        let config = self.config;
        let classes = self.data.dataset.classes();
        let images = images_tensor(&mut batch, &self.train_device);
        let step = batch_loss(
            model,
            images,
            &batch.labels,
            mix,
            classes,
            config.objective(),
        )?;
        let loss_value = step.loss.clone().into_scalar::<f32>() as f64;
        let logits = step
            .logits
            .into_data()
            .try_into_vec::<f32>()
            .expect("logits are f32");
        let sums = [
            loss_value * batch.len() as f64,
            mixup_hits(&logits, &step.targets, classes),
            !loss_value.is_finite() as u8 as f64,
        ];
        Ok((Some(step.loss), sums))
    }

    /// After an epoch's training: the ranks' statistics averaged, the evaluation (on the
    /// epochs the config asks for), the epoch's record, its checkpoint and reports.
    #[allow(clippy::expect_used, reason = "cannot fail: just pushed")]
    fn end_epoch(
        &mut self,
        model: M,
        optim: &ModuleOptimizer,
        state: &mut RunState,
        trained: PartialEpoch,
    ) -> Result<M, TrainError> {
        let (config, data) = (self.config, self.data);
        let epoch = state.epochs_done;
        let model = self.ranks.average_statistics(model);
        self.ranks.check_in_step(&model)?;
        // The loss checked in each step comes before its update: the last update is checked here.
        ensure_finite(&model, epoch)?;

        let eval_started = Instant::now();
        let measured = config.evaluates_after(epoch + 1);
        let on = |set: &ImageSet| {
            self.ranks.evaluate(
                &model,
                set,
                &data.normalization,
                config.eval_batch_size,
                &self.device,
            )
        };
        let valid = data.valid.as_ref().filter(|_| measured).map(on);
        let test = measured.then(|| on(&data.dataset.test));
        let on_teacher = |set: &ImageSet| {
            let teacher = self.teacher.as_ref()?;
            Some(self.ranks.evaluate(
                teacher.model(),
                set,
                &data.normalization,
                config.eval_batch_size,
                &self.device,
            ))
        };
        let teacher_valid = data
            .valid
            .as_ref()
            .filter(|_| measured)
            .and_then(on_teacher);
        let teacher_test = measured.then(|| on_teacher(&data.dataset.test)).flatten();
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
            lr: config
                .schedule
                .lr(config.lr, config.lr_decay, epoch, config.epochs),
            train_loss: trained.loss_sum / trained.seen as f64,
            train_acc: trained.acc_sum / trained.seen as f64,
            valid,
            test,
            teacher_valid,
            teacher_test,
            images_per_second: trained.seen as f64 / trained.seconds,
            seconds: trained.seconds + eval_started.elapsed().as_secs_f64(),
        };
        state.train_seconds += trained.seconds;
        state.train_images += trained.seen;
        state.history.push(record);
        state.epochs_done += 1;
        self.save_checkpoint(&model, optim, state)?;
        self.report(Progress::EpochEnd(
            state.history.last().expect("just pushed"),
        ));
        let after_epoch = &mut self.after_epoch;
        self.ranks.on_leader(|| after_epoch(state, &model))?;
        self.write_teacher()?;
        Ok(model)
    }

    /// The mean teacher's weights as safetensors, where the run writes them (rank 0).
    fn write_teacher(&self) -> Result<(), TrainError> {
        let (Some(teacher), Some(path)) = (&self.teacher, &self.teacher_weights) else {
            return Ok(());
        };
        self.ranks.on_leader(|| {
            let bytes =
                to_safetensors(teacher.model()).map_err(|reason| TrainError::Checkpoint {
                    path: path.clone(),
                    reason,
                })?;
            crate::fsio::write_atomic(path, &bytes).map_err(|e| TrainError::io(path, e))
        })
    }

    /// A checkpoint of the run as it stands, written by rank 0 where the run keeps them.
    fn save_checkpoint(
        &self,
        model: &M,
        optim: &ModuleOptimizer,
        state: &RunState,
    ) -> Result<(), TrainError> {
        let Some(dir) = &self.checkpoints else {
            return Ok(());
        };
        self.ranks.on_leader(|| {
            let teacher = self.teacher.as_ref().map(MeanTeacher::model);
            checkpoint::save(dir, model, optim, state, teacher).map(drop)
        })
    }

    fn interrupted(&self) -> f64 {
        self.interrupt
            .is_some_and(|flag| flag.load(Ordering::SeqCst)) as u8 as f64
    }

    /// Passes `event` on, from rank 0 alone.
    fn report(&mut self, event: Progress) {
        if self.ranks.leader() {
            (self.progress)(event)
        }
    }
}

/// Nothing that is not a number may become a checkpoint.
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
