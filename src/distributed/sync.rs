//! What data-parallel ranks keep equal: the model they start from, the gradient of each
//! step, and the batch-norm running statistics their evaluation and checkpoints read.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::Collective;

/// The trainable parameters of a model, in the model's own (deterministic) order.
fn trainable<M: Module>(model: &M) -> Vec<(ParamId, Vec<usize>)> {
    struct Trainable(Vec<(ParamId, Vec<usize>)>);
    impl ModuleVisitor for Trainable {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.val().is_require_grad() {
                self.0
                    .push((param.id, param.lazy_shape().dims::<D>().to_vec()));
            }
        }
    }
    let mut visitor = Trainable(Vec::new());
    model.visit(&mut visitor);
    visitor.0
}

/// The gradient of the ranks' whole global batch, on every rank: each rank's gradient (of its
/// mean loss over `examples` rows) weighted by `examples / total`, summed in one flat buffer.
/// A parameter keeps no gradient only where no rank had one, as in a single process. The
/// buffer is built and cut on `device`, the (non-autodiff) device the model trains on, so that
/// ranks on GPUs sum it where it lies ([`Collective::sum_tensor`]).
#[allow(clippy::expect_used, reason = "cannot fail: converted to f32")]
pub(crate) fn all_reduce_gradients<M: Module>(
    world: &dyn Collective,
    model: &M,
    grads: GradientsParams,
    examples: usize,
    total: usize,
    device: &Device,
) -> GradientsParams {
    let params = trainable(model);
    let mut grads = grads;
    let sizes: Vec<usize> = params
        .iter()
        .map(|(_, dims)| dims.iter().product())
        .collect();
    let weight = examples as f32 / total as f32;
    // The gradients, then one presence count per parameter.
    let mut pieces = Vec::with_capacity(params.len() + 1);
    let mut present = vec![0f32; params.len()];
    for (k, ((id, dims), &size)) in params.iter().zip(&sizes).enumerate() {
        match take_flat_grad(&mut grads, *id, dims.len()) {
            Some(grad) => {
                pieces.push(grad.mul_scalar(weight));
                present[k] = 1.0;
            }
            None => pieces.push(Tensor::<1>::zeros([size], device)),
        }
    }
    let gradient_values: usize = sizes.iter().sum();
    pieces.push(Tensor::from_data(
        TensorData::new(present, [params.len()]),
        device,
    ));
    let flat = world.sum_tensor(Tensor::cat(pieces, 0));

    let present = flat
        .clone()
        .slice(gradient_values..gradient_values + params.len())
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32");
    let mut reduced = GradientsParams::new();
    let mut offset = 0;
    for (k, ((id, dims), &size)) in params.iter().zip(&sizes).enumerate() {
        if present[k] > 0.0 {
            register(
                &mut reduced,
                *id,
                flat.clone().slice(offset..offset + size),
                dims,
            );
        }
        offset += size;
    }
    reduced
}

/// The gradient of parameter `id` (of `rank` dimensions), flattened, if it has one.
#[allow(
    clippy::panic,
    reason = "cannot fail: every model's parameters have ranks 1 to 4"
)]
fn take_flat_grad(grads: &mut GradientsParams, id: ParamId, rank: usize) -> Option<Tensor<1>> {
    fn flat<const D: usize>(grad: Tensor<D>) -> Tensor<1> {
        grad.flatten(0, D - 1)
    }
    match rank {
        1 => grads.remove::<1>(id),
        2 => grads.remove::<2>(id).map(flat),
        3 => grads.remove::<3>(id).map(flat),
        4 => grads.remove::<4>(id).map(flat),
        5 => grads.remove::<5>(id).map(flat),
        _ => panic!("parameters of rank {rank} are not supported"),
    }
}

#[allow(
    clippy::panic,
    reason = "cannot fail: parameters of rank … are not supported"
)]
fn register(grads: &mut GradientsParams, id: ParamId, values: Tensor<1>, dims: &[usize]) {
    match *dims {
        [a] => grads.register(id, values.reshape([a])),
        [a, b] => grads.register(id, values.reshape([a, b])),
        [a, b, c] => grads.register(id, values.reshape([a, b, c])),
        [a, b, c, d] => grads.register(id, values.reshape([a, b, c, d])),
        [a, b, c, d, e] => grads.register(id, values.reshape([a, b, c, d, e])),
        _ => panic!("parameters of rank {} are not supported", dims.len()),
    }
}

/// Replaces every batch-norm running statistic (every float a model holds that is not
/// trained) by its mean over the ranks. Ranks normalise their own shards while training, so
/// their statistics drift apart; evaluation and checkpoints read the average.
pub(crate) fn average_running_statistics<M: Module>(world: &dyn Collective, model: M) -> M {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        #[allow(clippy::expect_used, reason = "cannot fail: converted to f32")]
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if !value.is_require_grad() {
                let values = value.into_data().convert::<f32>();
                self.0
                    .extend(values.try_into_vec::<f32>().expect("converted to f32"));
            }
        }
    }
    struct Replace<'a> {
        values: &'a [f32],
        offset: usize,
    }
    impl ModuleMapper for Replace<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if param.val().is_require_grad() {
                return param;
            }
            let shape = param.lazy_shape();
            let size = shape.num_elements();
            let values = self.values[self.offset..self.offset + size].to_vec();
            self.offset += size;
            param.map(|tensor| {
                let device = tensor.device();
                Tensor::from_data(TensorData::new(values, shape.dims::<D>().to_vec()), &device)
            })
        }
    }
    if world.size() == 1 {
        return model;
    }
    // `valid` folds the pending updates into the statistics the visitor reads.
    let _ = model.valid();
    let mut collected = Collect(Vec::new());
    model.visit(&mut collected);
    if collected.0.is_empty() {
        return model;
    }
    let mut values = collected.0;
    world.sum_f32(&mut values);
    let ranks = world.size() as f32;
    values.iter_mut().for_each(|v| *v /= ranks);
    model.map(&mut Replace {
        values: &values,
        offset: 0,
    })
}

/// Rank 0's model on every rank, through its record's bytes.
pub(crate) fn broadcast_model<M: Module>(world: &dyn Collective, model: M) -> Result<M, String> {
    if world.size() == 1 {
        return Ok(model);
    }
    let bytes = match world.rank() {
        0 => model
            .valid()
            .into_record()
            .into_bytes()
            .map_err(|e| e.to_string())?
            .to_vec(),
        _ => Vec::new(),
    };
    let bytes = super::from_rank_zero(world, bytes);
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| e.to_string())?;
    model.try_load_record(record).map_err(|e| e.to_string())
}

/// A fingerprint of every float a model holds (FNV-1a over their bits, in the model's order).
pub(crate) fn fingerprint<M: Module>(model: &M) -> u64 {
    struct Fnv(u64);
    impl ModuleVisitor for Fnv {
        #[allow(clippy::expect_used, reason = "cannot fail: converted to f32")]
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().convert::<f32>();
            for value in values.try_into_vec::<f32>().expect("converted to f32") {
                for byte in value.to_bits().to_le_bytes() {
                    self.0 = (self.0 ^ byte as u64).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
    }
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    model.valid().visit(&mut hash);
    hash.0
}

/// Checks that every rank holds rank 0's model bit for bit, as ranks that apply the same
/// reduced gradients must; `Err` names the first rank that does not. Every rank calls it.
pub(crate) fn check_in_step<M: Module>(world: &dyn Collective, model: &M) -> Result<(), String> {
    if world.size() == 1 {
        return Ok(());
    }
    let mine = fingerprint(model).to_le_bytes();
    let leader = super::from_rank_zero(world, mine.to_vec());
    let mut differs = vec![0.0f64; world.size()];
    differs[world.rank()] = (leader != mine) as u8 as f64;
    world.sum_f64(&mut differs);
    match differs.iter().position(|&d| d > 0.0) {
        None => Ok(()),
        Some(rank) => Err(format!(
            "rank {rank}'s weights differ from rank 0's: the ranks no longer train one model"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelConfig, ModelKind};

    #[test]
    fn fingerprints_tell_models_apart_and_copies_alike() {
        let device = Device::flex();
        let config = ModelConfig::new(ModelKind::Mlp, 1, 4, 3).with_width(4);
        let a = config.init(&device).unwrap();
        let same = a.clone();
        let other = config.init(&device).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&same));
        assert_ne!(fingerprint(&a), fingerprint(&other));
        // A world of one has nothing to compare.
        assert!(check_in_step(&super::super::Solo, &other).is_ok());
    }
}
