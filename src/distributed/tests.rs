use super::*;

#[test]
fn shards_cover_a_global_batch_exactly_once() {
    for batch in [1usize, 2, 7, 100, 128, 129] {
        for ranks in 1..=8usize.min(batch) {
            let mut seen = vec![0usize; batch];
            let mut sizes = Vec::new();
            for rank in 0..ranks {
                let rows = shard(batch, ranks, rank);
                sizes.push(rows.len());
                for row in rows {
                    seen[row] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "batch {batch}, {ranks} ranks");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1 && *min >= 1, "{sizes:?}");
        }
    }
}

#[test]
fn a_short_last_batch_leaves_no_rank_empty_handed_unless_it_must() {
    // 60,000 examples in batches of 128 end with a batch of 96.
    let last = 60_000 % 128;
    assert_eq!(last, 96);
    let sizes: Vec<usize> = (0..4).map(|r| shard(last, 4, r).len()).collect();
    assert_eq!(sizes, [24, 24, 24, 24]);
    // A batch of 1 over 2 ranks: one of them trains on nothing this step.
    let sizes: Vec<usize> = (0..2).map(|r| shard(1, 2, r).len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1);
}

#[test]
fn shards_are_unions_of_whole_partner_groups() {
    for batch in [5usize, 64, 97, 128] {
        for ranks in 1..=4 {
            for per_rank in 1..=3 {
                let groups = ranks * per_rank;
                for rank in 0..ranks {
                    let rows = shard(batch, ranks, rank);
                    let first = crate::mixup::group_rows(batch, groups, rank * per_rank);
                    let last = crate::mixup::group_rows(batch, groups, (rank + 1) * per_rank - 1);
                    assert_eq!((rows.start, rows.end), (first.start, last.end));
                }
            }
        }
    }
}

#[test]
fn a_split_needs_a_row_per_rank_and_groups_per_rank() {
    assert!(check_split(128, 2, 2).is_ok());
    assert!(check_split(128, 4, 2).is_ok());
    assert!(matches!(
        check_split(1, 2, 2),
        Err(DistributedError::BatchBelowRanks { .. })
    ));
    assert!(matches!(
        check_split(128, 3, 2),
        Err(DistributedError::GroupsNotSplit { .. })
    ));
    assert!(check_split(7, 1, 1).is_ok());
}

#[test]
fn launchers_are_told_apart_by_the_variables_they_set() {
    let launched = |pairs: &[(&str, &str)]| {
        launched_ranks_in(|name| {
            let (_, value) = pairs.iter().find(|(variable, _)| *variable == name)?;
            Some(value.to_string())
        })
    };
    assert_eq!(launched(&[]), None);
    assert_eq!(
        launched(&[("OMPI_COMM_WORLD_SIZE", "4"), ("SLURM_STEP_NUM_TASKS", "1")]),
        Some(("mpirun (Open MPI)", 4))
    );
    assert_eq!(
        launched(&[("PMI_SIZE", " 3 ")]),
        Some(("mpiexec or srun (PMI)", 3))
    );
    assert_eq!(
        launched(&[("SLURM_STEP_NUM_TASKS", "16")]),
        Some(("srun", 16))
    );
    // One process, or a count that is not one, is no launch.
    assert_eq!(launched(&[("SLURM_STEP_NUM_TASKS", "1")]), None);
    assert_eq!(launched(&[("OMPI_COMM_WORLD_SIZE", "two")]), None);
}

#[test]
fn srun_without_a_process_manager_for_mpi_is_refused_in_one_line() {
    let refused = check_process_manager("srun", 2, ["SLURM_PROCID", "HOME"].into_iter());
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("srun --mpi=pmix"), "{message}");
    assert!(!message.contains('\n'));
    for managed in ["PMIX_RANK", "PMI_FD"] {
        assert!(check_process_manager("srun", 2, ["SLURM_PROCID", managed].into_iter()).is_ok());
    }
    // mpirun and mpiexec bring their own.
    assert!(check_process_manager("mpirun (Open MPI)", 2, std::iter::empty()).is_ok());
}

use super::threads::{TensorSums, run_on_threads};

#[test]
fn ranks_agree_on_the_first_failure() {
    let outcomes = run_on_threads(3, TensorSums::InHostMemory, |_| {
        let world = world();
        let local: Result<usize, String> = match world.rank() {
            0 => Ok(0),
            rank => Err(format!("disk full on rank {rank}")),
        };
        agree(world, local).map_err(|failure| failure.to_string())
    });
    assert_eq!(outcomes[0], Err("rank 1: disk full on rank 1".into()));
    assert_eq!(outcomes[1], Err("disk full on rank 1".into()));
    assert_eq!(outcomes[2], Err("disk full on rank 2".into()));
    let fine = run_on_threads(2, TensorSums::InHostMemory, |rank| {
        agree(world(), Ok::<_, String>(rank)).ok()
    });
    assert_eq!(fine, [Some(0), Some(1)]);
}

mod sync_across_ranks {
    use burn::module::{Module, ModuleVisitor, Param, ParamId};
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Tensor, TensorData};

    use crate::distributed::sync::{
        all_reduce_gradients, average_running_statistics, check_in_step,
    };
    use crate::distributed::threads::{TensorSums, run_on_threads};
    use crate::distributed::world;
    use crate::models::layers::BatchNorm2d;
    use crate::models::{ModelConfig, ModelKind};

    fn mlp(seed: u64) -> crate::models::Classifier {
        let device = Device::flex();
        device.seed(seed);
        ModelConfig::new(ModelKind::Mlp, 1, 4, 3)
            .with_width(4)
            .init(&device.autodiff())
            .unwrap()
    }

    fn params(model: &impl Module) -> Vec<(ParamId, Vec<usize>)> {
        struct All(Vec<(ParamId, Vec<usize>)>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0
                    .push((param.id, param.lazy_shape().dims::<D>().to_vec()));
            }
        }
        let mut all = All(Vec::new());
        model.visit(&mut all);
        all.0
    }

    fn grad_values(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Vec<f32>> {
        let data = match rank {
            1 => grads.get::<1>(id).map(|t| t.into_data()),
            2 => grads.get::<2>(id).map(|t| t.into_data()),
            _ => unreachable!(),
        };
        data.map(|d| d.try_into_vec::<f32>().unwrap())
    }

    fn filled(dims: &[usize], value: f32) -> TensorData {
        TensorData::new(vec![value; dims.iter().product()], dims.to_vec())
    }

    #[test]
    fn gradients_are_weighted_by_each_ranks_examples() {
        let model = mlp(3);
        let all = params(&model);
        let [(first, first_dims), (second, second_dims)] = [all[0].clone(), all[1].clone()];
        // Rank 0 holds 3 examples with gradient 1 everywhere; rank 1 holds 1 example with
        // gradient 5 for the first parameter and none for the second.
        let reduced = run_on_threads(2, TensorSums::InHostMemory, |_| {
            let world = world();
            let device = Device::flex();
            let mut grads = GradientsParams::new();
            let (examples, value) = [(3, 1.0), (1, 5.0)][world.rank()];
            let register = |grads: &mut GradientsParams, id, dims: &[usize]| match dims.len() {
                1 => grads.register(id, Tensor::<1>::from_data(filled(dims, value), &device)),
                2 => grads.register(id, Tensor::<2>::from_data(filled(dims, value), &device)),
                _ => unreachable!(),
            };
            register(&mut grads, first, &first_dims);
            if world.rank() == 0 {
                register(&mut grads, second, &second_dims);
            }
            let reduced = all_reduce_gradients(world, &model, grads, examples, 4, &device);
            (
                grad_values(&reduced, first, first_dims.len()),
                grad_values(&reduced, second, second_dims.len()),
                grad_values(&reduced, all[2].0, all[2].1.len()),
            )
        });
        for (first, second, third) in reduced {
            // (3·1 + 1·5) / 4 = 2; (3·1 + 0) / 4 = 0.75; no rank had the third.
            assert!(first.unwrap().iter().all(|&g| (g - 2.0).abs() < 1e-6));
            assert!(second.unwrap().iter().all(|&g| (g - 0.75).abs() < 1e-6));
            assert_eq!(third, None);
        }
    }

    #[test]
    fn running_statistics_become_the_ranks_mean_and_weights_stay() {
        let out = run_on_threads(2, TensorSums::InHostMemory, |_| {
            let world = world();
            let device = Device::flex().autodiff();
            let bn = BatchNorm2d::new(2, &device);
            let shift = world.rank() as f32 * 2.0;
            bn.running_mean.update(Tensor::from_data(
                TensorData::new(vec![1.0 + shift, -1.0 - shift], [2]),
                &device,
            ));
            let weight = bn.weight.val().into_data().try_into_vec::<f32>().unwrap();
            let bn = average_running_statistics(world, bn);
            let mean = bn.running_mean.value().into_data();
            let after = bn.weight.val().into_data().try_into_vec::<f32>().unwrap();
            (mean.try_into_vec::<f32>().unwrap(), weight == after)
        });
        for (mean, weights_kept) in out {
            assert_eq!(mean, [2.0, -2.0]);
            assert!(weights_kept);
        }
    }

    #[test]
    fn a_rank_with_other_weights_is_named() {
        let (model, other) = (mlp(4), mlp(9));
        let outcomes = run_on_threads(3, TensorSums::InHostMemory, |rank| {
            check_in_step(world(), if rank == 2 { &other } else { &model })
        });
        for outcome in outcomes {
            let error = outcome.unwrap_err();
            assert!(error.starts_with("rank 2's weights differ"), "{error}");
        }
        let same = run_on_threads(2, TensorSums::InHostMemory, |_| {
            check_in_step(world(), &model)
        });
        assert!(same.iter().all(Result::is_ok));
    }
}
