//! What a run is made of before its first step: the data split and normalised, the model
//! checked against the data and the mixing, and the optimizer.

use burn::optim::ModuleOptimizer;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::{TrainConfig, TrainError, UnlabeledPool};
use crate::data::{Augmentation, Dataset, ImageSet, LoadOptions, Normalization, UnlabeledSet};
use crate::eval::Metrics;
use crate::mixup::{MixPoint, Mixable};
use crate::models::{Classifier, ModelConfig};

/// The data of a run after splitting, with the statistics it was normalised by.
pub struct RunData {
    /// The data set, with its test split.
    pub dataset: Dataset,
    /// The training split.
    pub train: ImageSet,
    /// The validation split, where the run holds one out.
    pub valid: Option<ImageSet>,
    /// The training split's per-channel statistics.
    pub normalization: Normalization,
    /// The data set's standard augmentation, or none.
    pub augmentation: Augmentation,
    /// The images' side before `--pad-to` padded them (their side, where it did not).
    pub unpadded_size: usize,
    /// A semi-supervised run's unlabelled images: training images outside the labelled and
    /// validation splits, without their labels.
    pub unlabeled: Option<crate::data::UnlabeledSet>,
}

/// The split has its own RNG stream of the run's seed, so it does not depend on anything the
/// training stream does, and evaluation can rebuild it from the config alone.
const SPLIT_STREAM: u64 = 1;

/// Loads the config's data set and splits it, with the split's own seed.
pub fn prepare_data(config: &TrainConfig) -> Result<RunData, TrainError> {
    let dataset = crate::data::load(
        config.dataset,
        &LoadOptions {
            data_dir: config.data_dir.clone(),
            image_size: config.image_size,
            cifar100_coarse: config.cifar100_coarse,
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
    let unpadded_size = dataset.train.size;
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
    let unlabeled = match &config.semi {
        Some(semi) => Some(unlabeled_images(
            &semi.unlabeled,
            config,
            &dataset.train,
            &split.unlabeled,
            &mut split_rng,
            unpadded_size,
        )?),
        None => None,
    };
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
        unpadded_size,
        unlabeled,
    })
}

/// The unlabelled images of `pool`: training images `left_out` of the labelled split (`train`
/// is already padded), or a folder's, read at the unpadded size and padded as `train` was.
fn unlabeled_images(
    pool: &UnlabeledPool,
    config: &TrainConfig,
    train: &ImageSet,
    left_out: &[usize],
    split_rng: &mut ChaCha12Rng,
    unpadded_size: usize,
) -> Result<UnlabeledSet, TrainError> {
    let indices = match pool {
        UnlabeledPool::Rest => left_out.to_vec(),
        UnlabeledPool::Count(count) => crate::data::draw_unlabeled(left_out, *count, split_rng)?,
        UnlabeledPool::Folder(dir) => {
            let images = crate::data::read_unlabeled_folder(dir, unpadded_size, train.channels)?;
            return Ok(match config.pad_to {
                Some(size) => images.padded(size)?,
                None => images,
            });
        }
    };
    if indices.is_empty() {
        return Err(TrainError::Data(crate::data::DataError::Split(
            "--unlabeled rest: the labelled split keeps every training image, so none is left unlabelled (use --labels-per-class or --train-subset)".into(),
        )));
    }
    Ok(train.unlabeled(&indices))
}

pub(crate) fn model_config(config: &TrainConfig, data: &RunData) -> ModelConfig {
    let (channels, size) = (data.train.channels, data.train.size);
    ModelConfig::new(config.model, channels, size, data.dataset.classes()).with_width(config.width)
}

/// The config's built-in model for the data, on `device`.
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
    // A semi-supervised step holds the labelled and the unlabelled batch's graphs at once.
    let (unlabeled_rows, batches) = match &config.semi {
        Some(semi) => (
            semi.batch_size,
            format!(
                "--batch-size {} + --unlabeled-batch-size {}",
                config.batch_size, semi.batch_size
            ),
        ),
        None => (0, format!("--batch-size {}", config.batch_size)),
    };
    let estimate = model.memory_estimate()?;
    let needed = estimate.training_bytes(
        config
            .batch_size
            .saturating_mul(config.mix_loss.graphs())
            .saturating_add(unlabeled_rows),
    );
    crate::machine::check_fits(
        format!(
            "{} at --width {} and {batches} on {}×{} images",
            config.model, config.width, data.train.size, data.train.size
        ),
        needed,
        match config.semi {
            Some(_) => "lower --width, --batch-size, --unlabeled-batch-size or --image-size",
            None => "lower --width, --batch-size or --image-size",
        },
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
        estimate.inference_bytes(eval_rows),
        "lower --eval-batch-size, --width or --image-size",
    )?;
    Ok(())
}

/// The mixing and the evaluation suite against a model's mix points.
pub(crate) fn check_mixing(config: &TrainConfig, points: &[MixPoint]) -> Result<(), TrainError> {
    config.mix_config().validate(points, config.epochs)?;
    config.evaluate.validate(points.len().saturating_sub(1))?;
    Ok(())
}

/// SGD as the config asks, with PyTorch's semantics.
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
