//! Measurements of the train step and of the data pipeline, for `mmix bench`.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::Serialize;

use crate::data::{Augmentation, ImageSet, Normalization, make_batch};
use crate::mixup::{
    MixConfig, MixLoss, MixMode, Mixable, OUTPUT_POINT, TensorMix, interpolation_consistency,
    mix_at, soft_targets,
};
use crate::models::{ModelConfig, ModelError, ModelKind};
use crate::train::{MeanTeacher, Objective, unlabeled_mix};

#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    pub model: String,
    pub width: usize,
    pub batch: usize,
    pub mix: String,
    /// ICT beside the supervised step: where the unlabelled pair is mixed, and its batch.
    pub semi: Option<String>,
    pub device: String,
    /// Which library ran the convolutions: `onednn` or `burn`.
    pub convolution: &'static str,
    /// The convolutions' arithmetic: `f32`, or `bf16` operands with f32 accumulation.
    pub precision: String,
    /// The instruction set oneDNN dispatched to (`avx512_core_amx`, ...); null off oneDNN.
    pub isa: Option<String>,
    pub threads: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub images_per_second: f64,
    pub peak_rss_mb: f64,
    /// The memory check's estimate of the process's peak (`ModelConfig::training_bytes`),
    /// which `peak_rss_mb` must stay below.
    pub estimated_peak_mb: Option<f64>,
    /// Data-parallel ranks: each steps on its share of `batch`, and the gradients are
    /// all-reduced between backward and update (inside the timed step).
    pub ranks: usize,
    /// The all-reduce of one step's gradients alone, median over the timed steps.
    pub allreduce_ms: Option<f64>,
    /// The gradients all-reduced per step, in MB (10⁶ bytes, f32).
    pub gradient_mb: f64,
    /// A step's floating-point work on this rank, in GFLOP: three times its forward passes'
    /// convolutions and linear layers (the backward pass's two products per forward one), two
    /// FLOP per multiply-add, as PyTorch's FlopCounterMode counts; elementwise work left out.
    pub gflop_per_step: f64,
    /// `gflop_per_step` over the median step time.
    pub gflops: f64,
    /// This machine's multiply-add peak for the convolutions' arithmetic, in GFLOP/s over all
    /// threads, measured by running the own kernels' instruction (FMA, or `vdpbf16ps` in bf16)
    /// on registers alone on every thread at once; null where the convolutions run elsewhere
    /// (oneDNN, Burn, a GPU).
    pub peak_gflops: Option<f64>,
    /// `gflops` over `peak_gflops`.
    pub peak_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataBench {
    pub dataset: String,
    pub batch: usize,
    pub batches: usize,
    pub images_per_second: f64,
    pub peak_rss_mb: f64,
}

/// Peak resident set size of this process, from `/proc/self/status` (0 where unavailable).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn summarise(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    (median, times[0], times[times.len() - 1])
}

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Precision(String),
    #[error(transparent)]
    Mixup(#[from] crate::mixup::MixupError),
    #[error(transparent)]
    Distributed(#[from] crate::distributed::DistributedError),
}

/// Every mode of the mixup family, per batch and (where it draws more than λ) per example,
/// with plain training first: what the benchmarks time.
pub const MIX_FAMILY: [(MixMode, bool); 9] = [
    (MixMode::None, false),
    (MixMode::Manifold, false),
    (MixMode::Input, false),
    (MixMode::Cutmix, false),
    (MixMode::Patchup, false),
    (MixMode::Output, false),
    (MixMode::Manifold, true),
    (MixMode::Cutmix, true),
    (MixMode::Patchup, true),
];

pub struct StepBenchConfig {
    pub model: ModelKind,
    pub width: usize,
    pub batch: usize,
    pub mix: MixMode,
    /// λ and mix point (or box or mask) per example.
    pub per_example: bool,
    /// Replace the clean loss with the mixed one, or add it (RegMixup: two forward passes).
    pub mix_loss: MixLoss,
    pub channels: usize,
    pub image_size: usize,
    pub classes: usize,
    pub steps: usize,
    pub warmup: usize,
    pub precision: crate::kernels::Precision,
    /// ICT beside the supervised step: a second batch, of unlabelled images, through the
    /// teacher and through the student mixed, and the teacher's update after the step.
    pub semi: Option<SemiBench>,
}

/// What an ICT step adds: where its unlabelled pair is mixed and how many images it takes.
#[derive(Clone, Copy, Debug)]
pub struct SemiBench {
    /// `input` (ICT) or `manifold` (at a point drawn from the model's eligible points).
    pub mix: MixMode,
    /// Unlabelled images per step (the whole global batch).
    pub batch: usize,
}

/// A benchmark's unlabelled half: this rank's images, their mix and the mean teacher.
struct UnlabeledBench<M> {
    mix: MixConfig,
    batch: usize,
    rows: std::ops::Range<usize>,
    images: Tensor<4>,
    teacher: MeanTeacher<M>,
}

impl<M: Mixable> UnlabeledBench<M> {
    fn new(
        semi: SemiBench,
        student: &M,
        config: &StepBenchConfig,
        device: &Device,
    ) -> Result<Self, BenchError> {
        let world = crate::distributed::world();
        crate::distributed::check_split(semi.batch, world.size(), world.size())?;
        let rows = crate::distributed::shard(semi.batch, world.size(), world.rank());
        let mix = MixConfig {
            partner_groups: world.size(),
            ..unlabeled_mix(semi.mix, 1.0, &config.model.paper_mix_points())
        };
        mix.validate(&config.model.mix_points(), 1)?;
        let shape = [
            rows.len(),
            config.channels,
            config.image_size,
            config.image_size,
        ];
        Ok(Self {
            mix,
            batch: semi.batch,
            rows,
            images: Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device),
            // The semi-supervised study's decay; the update's cost does not depend on it.
            teacher: MeanTeacher::new(student, 0.99),
        })
    }

    /// The consistency term of one step, with a freshly drawn mix.
    #[allow(clippy::expect_used, reason = "cannot fail: ranks hold whole groups")]
    fn consistency(
        &self,
        student: &M,
        rng: &mut ChaCha12Rng,
        train_device: &Device,
    ) -> Result<Tensor<1>, BenchError> {
        let plan = self.mix.draw(rng, self.batch, 0, 1);
        let plan = plan.map(|plan| {
            plan.rows(self.rows.clone())
                .expect("ranks hold whole groups")
        });
        let mix = plan.as_ref().map(|p| TensorMix::new(p, train_device));
        let teacher_logits = self
            .teacher
            .model()
            .forward_mixed(self.images.clone(), None)
            .into_data()
            .iter::<f64>()
            .collect();
        let images = Tensor::<4>::from_inner(self.images.clone());
        Ok(interpolation_consistency(
            student,
            images,
            teacher_logits,
            mix.as_ref(),
        )?)
    }
}

/// Times full train steps (plan, mixed forward, backward, SGD update, loss to the host) on
/// random input of the model's shape.
#[allow(clippy::expect_used, reason = "cannot fail: ranks hold whole groups")]
pub fn bench_step(
    config: &StepBenchConfig,
    device: &Device,
    device_name: &str,
) -> Result<StepBench, BenchError> {
    crate::kernels::use_precision(config.precision, device).map_err(BenchError::Precision)?;
    device.seed(0);
    let train_device = device.clone().autodiff();
    let mut model = ModelConfig::new(
        config.model,
        config.channels,
        config.image_size,
        config.classes,
    )
    .with_width(config.width)
    .init(&train_device)?;
    // The training loop's own optimizer, set as the PyTorch reference's: momentum 0.9
    // without dampening or Nesterov, weight decay 5e-4.
    let mut optim = crate::train::optimizer(&crate::train::TrainConfig {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
        ..Default::default()
    });
    let world = crate::distributed::world();
    crate::distributed::check_split(config.batch, world.size(), world.size())?;
    let rows = crate::distributed::shard(config.batch, world.size(), world.rank());
    let mix = MixConfig {
        per_example: config.per_example,
        partner_groups: world.size(),
        ..MixConfig::new(config.mix, 2.0, config.model.paper_mix_points())
    };
    mix.validate(&config.model.mix_points(), 1)?;
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let shape = [
        rows.len(),
        config.channels,
        config.image_size,
        config.image_size,
    ];
    let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &train_device);
    let labels: Vec<usize> = (0..config.batch)
        .map(|_| rng.random_range(0..config.classes))
        .collect();
    let labels = &labels[rows.clone()];
    let mut unlabeled = config
        .semi
        .map(|semi| UnlabeledBench::new(semi, &model, config, device))
        .transpose()?;
    let mut times = Vec::with_capacity(config.steps);
    let mut allreduce_times = Vec::with_capacity(config.steps);
    let mut forward_flops = 0;
    crate::kernels::take_convolution_flops();
    for step in 0..config.warmup + config.steps {
        let started = Instant::now();
        let plan = mix.draw(&mut rng, config.batch, 0, 1);
        let plan = plan.map(|plan| plan.rows(rows.clone()).expect("ranks hold whole groups"));
        let tensor_mix = plan.as_ref().map(|p| TensorMix::new(p, &train_device));
        let loss = crate::train::batch_loss(
            &model,
            images.clone(),
            labels,
            tensor_mix.as_ref(),
            config.classes,
            Objective {
                mix_loss: config.mix_loss,
                ..Objective::default()
            },
        )?
        .loss;
        let loss = match &unlabeled {
            Some(unlabeled) => loss + unlabeled.consistency(&model, &mut rng, &train_device)?,
            None => loss,
        };
        let _ = loss.clone().into_scalar::<f32>();
        if step == 0 {
            forward_flops = crate::kernels::take_convolution_flops();
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        if world.size() > 1 {
            let _ = device.sync();
            let reducing = Instant::now();
            grads = crate::distributed::sync::all_reduce_gradients(
                world,
                &model,
                grads,
                rows.len(),
                config.batch,
                device,
            );
            if step >= config.warmup {
                allreduce_times.push(reducing.elapsed().as_secs_f64() * 1e3);
            }
        }
        model = optim.step(0.01, model, grads);
        if let Some(unlabeled) = &mut unlabeled {
            unlabeled.teacher.update(&model);
        }
        // Wait for the update itself, not only its enqueueing, on asynchronous devices.
        let _ = device.sync();
        if step >= config.warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (median, min, max) = summarise(times);
    let allreduce_ms = (!allreduce_times.is_empty()).then(|| summarise(allreduce_times).0);
    let passes = match (config.mix_loss, config.mix) {
        (MixLoss::Regmixup, MixMode::None) | (MixLoss::Replace, _) => 1,
        (MixLoss::Regmixup, _) => 2,
    } + usize::from(config.semi.is_some());
    let linear_flops = 2 * rows.len() * linear_multiply_adds(&model) * passes;
    let gflop_per_step = 3.0 * (forward_flops as f64 + linear_flops as f64) * 1e-9;
    let gflops = gflop_per_step * 1e3 / median;
    let peak_gflops =
        crate::kernels::peak_flops(device, config.precision).map(|flops| flops * 1e-9);
    Ok(StepBench {
        model: config.model.to_string(),
        width: config.width,
        batch: config.batch,
        mix: match config.mix_loss {
            MixLoss::Replace => mix_name(&mix),
            MixLoss::Regmixup => format!("{} regmixup", mix_name(&mix)),
        },
        semi: unlabeled
            .as_ref()
            .map(|unlabeled| format!("ict {} ×{}", unlabeled.mix.mode, unlabeled.batch)),
        device: device_name.to_string(),
        convolution: crate::kernels::convolution_library(device),
        precision: config.precision.to_string(),
        isa: crate::kernels::convolution_isa(device, config.precision),
        threads: rayon::current_num_threads(),
        median_ms: median,
        min_ms: min,
        max_ms: max,
        images_per_second: config.batch as f64 * 1e3 / median,
        peak_rss_mb: peak_rss_mb(),
        estimated_peak_mb: None,
        ranks: world.size(),
        allreduce_ms,
        gradient_mb: crate::models::trainable_parameter_count(&model) as f64 * 4e-6,
        gflop_per_step,
        gflops,
        peak_gflops,
        peak_share: peak_gflops.map(|peak| gflops / peak),
    })
}

/// Multiply-adds of one image through the model's linear layers: the elements of its
/// rank-2 weights, each of which the models apply once per forward pass.
fn linear_multiply_adds<M: burn::module::Module>(model: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if D == 2 {
                self.0 += param.val().shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

/// Times the data pipeline alone: shuffled batches with augmentation and normalisation.
pub fn bench_data(
    set: &ImageSet,
    normalization: &Normalization,
    augmentation: &Augmentation,
    batch: usize,
    batches: usize,
    dataset: &str,
) -> DataBench {
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let mut order: Vec<usize> = (0..set.len()).collect();
    let started = Instant::now();
    let mut images = 0;
    for b in 0..batches {
        if (b * batch) % set.len() + batch > set.len() {
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        }
        let start = (b * batch) % set.len();
        let end = (start + batch).min(set.len());
        let out = make_batch(
            set,
            &order[start..end],
            normalization,
            Some((augmentation, &mut rng)),
        );
        images += out.len();
        std::hint::black_box(&out.images);
    }
    DataBench {
        dataset: dataset.to_string(),
        batch,
        batches,
        images_per_second: images as f64 / started.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
    }
}

/// The mixing work of one train step alone, for one mode: the plan's draws, the mix at each of
/// PreActResNet-18's points 0–2 (as the model holds them, channel-blocked on the oneDNN route)
/// and of the logits, the targets, and the backward pass through the mixes. Every mode pays the
/// same around it, so differences between modes are differences between their mixes.
#[derive(Clone, Debug, Serialize)]
pub struct MixOpBench {
    pub mix: String,
    pub width: usize,
    pub batch: usize,
    /// Channels per block of the hidden maps (1: plain).
    pub block: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

pub fn bench_mix_op(
    mix: &MixConfig,
    width: usize,
    batch: usize,
    steps: usize,
    device: &Device,
) -> Result<MixOpBench, BenchError> {
    let kind = ModelKind::PreActResNet { depth: 18 };
    mix.validate(&kind.mix_points(), 1)?;
    let block = crate::models::feature_block(device, width);
    let train_device = device.clone().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let input = Tensor::<4>::random([batch, 3, 32, 32], normal, &train_device).require_grad();
    let stage = |channels: usize, side: usize| {
        Tensor::<5>::random(
            [batch, channels / block, side, side, block],
            normal,
            &train_device,
        )
        .require_grad()
    };
    let (stage1, stage2) = (stage(width, 32), stage(2 * width, 16));
    let logits = Tensor::<2>::random([batch, 10], normal, &train_device).require_grad();
    let constant = |t: &Tensor<5>| Tensor::<5>::random(t.dims(), normal, &train_device);
    let (weigh1, weigh2) = (constant(&stage1), constant(&stage2));
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps + 2 {
        let started = Instant::now();
        let plan = mix.draw(&mut rng, batch, 0, 1);
        let tensor_mix = plan.as_ref().map(|p| TensorMix::new(p, &train_device));
        let tensor_mix = tensor_mix.as_ref();
        let mixed_input = mix_at(tensor_mix, 0, input.clone());
        let mixed1 = mix_at(tensor_mix, 1, stage1.clone());
        let mixed2 = mix_at(tensor_mix, 2, stage2.clone());
        let mixed_logits = mix_at(tensor_mix, OUTPUT_POINT, logits.clone());
        let applied = tensor_mix.map(TensorMix::applied).transpose()?;
        let targets = soft_targets(&labels, applied.as_ref(), 10, 0.0);
        let targets = Tensor::from_data(TensorData::new(targets, [batch, 10]), &train_device);
        let loss = mixed_input.sum()
            + (mixed1 * weigh1.clone()).sum()
            + (mixed2 * weigh2.clone()).sum()
            + (mixed_logits * targets).sum();
        let _ = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        let _ = stage1.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        if step >= 2 {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (median, min, max) = summarise(times);
    Ok(MixOpBench {
        mix: mix_name(mix),
        width,
        batch,
        block,
        median_ms: median,
        min_ms: min,
        max_ms: max,
    })
}

fn mix_name(mix: &MixConfig) -> String {
    if mix.per_example {
        format!("{} per-example", mix.mode)
    } else {
        mix.mode.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_step(semi: Option<SemiBench>) -> StepBenchConfig {
        StepBenchConfig {
            model: ModelKind::SmallCnn,
            width: 4,
            batch: 4,
            mix: MixMode::Manifold,
            per_example: false,
            mix_loss: MixLoss::Replace,
            channels: 1,
            image_size: 8,
            classes: 3,
            steps: 2,
            warmup: 0,
            precision: Default::default(),
            semi,
        }
    }

    #[test]
    fn a_step_counts_the_floating_point_work_of_its_convolutions_and_linear_layer() {
        // PreActResNet-18 of width 4 on 8×8 one-channel images, counted by hand: the stem,
        // then per stage two blocks of two 3×3 convolutions (the first of stages 2-4 strided,
        // with a 1×1 projection beside it), then the linear layer; three times the forward
        // pass, two FLOP a multiply-add.
        let (n, width, side, classes) = (2usize, 4usize, 8usize, 10usize);
        let mut multiply_adds = n * width * 9 * side * side;
        let mut in_planes = width;
        for stage in 0..4 {
            let (planes, size) = (width << stage, side >> stage);
            let pixels = n * size * size;
            multiply_adds += pixels * planes * in_planes * 9 + 3 * pixels * planes * planes * 9;
            if in_planes != planes {
                multiply_adds += pixels * planes * in_planes;
            }
            in_planes = planes;
        }
        multiply_adds += n * in_planes * classes;
        let config = StepBenchConfig {
            model: ModelKind::PreActResNet { depth: 18 },
            width,
            batch: n,
            channels: 1,
            image_size: side,
            classes,
            ..small_step(None)
        };
        let result = bench_step(&config, &Device::flex(), "cpu").unwrap();
        let expected = 3.0 * 2.0 * multiply_adds as f64 * 1e-9;
        assert!(
            (result.gflop_per_step - expected).abs() <= 1e-9 * expected,
            "{} GFLOP counted, {expected} by hand",
            result.gflop_per_step
        );
        assert!(result.gflops > 0.0);
        if let (Some(peak), Some(share)) = (result.peak_gflops, result.peak_share) {
            assert!(peak > 0.0 && (share - result.gflops / peak).abs() < 1e-12);
        }
    }

    #[test]
    fn an_ict_step_times_its_unlabelled_half_and_says_so() {
        let device = Device::flex();
        let plain = bench_step(&small_step(None), &device, "cpu").unwrap();
        assert_eq!(plain.semi, None);
        for (mix, label) in [
            (MixMode::Input, "ict input ×6"),
            (MixMode::Manifold, "ict manifold ×6"),
        ] {
            let semi = SemiBench { mix, batch: 6 };
            let ict = bench_step(&small_step(Some(semi)), &device, "cpu").unwrap();
            assert_eq!(ict.semi.as_deref(), Some(label));
            assert!(ict.median_ms > 0.0 && ict.images_per_second > 0.0);
        }
    }
}
