//! Data-parallel training across processes: which rank this process is, the collectives the
//! training loop calls, and how a global batch is cut into the ranks' shards.
//!
//! A process on its own is a world of one (`Solo`), and every collective is then a no-op.
//! Started by `mpirun` or `srun` in a build with the `mpi` feature, the world is MPI's. The
//! loop calls the same [`Collective`] either way, so it reads the same with one rank or many.

use std::ops::Range;
use std::sync::OnceLock;

use burn::tensor::{Tensor, TensorData};

#[cfg(feature = "mpi")]
mod mpi_world;
pub mod sync;
pub mod threads;

/// What one rank needs from the others. Every rank calls each collective in the same order;
/// buffers hold the same number of values on every rank.
pub trait Collective: Send + Sync {
    /// This process's rank, 0-based; rank 0 writes the run folder and prints.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// This process's index among the ranks on its machine (its GPU, under several).
    fn local_rank(&self) -> usize;
    /// Element-wise sums over the ranks, in place.
    fn sum_f32(&self, values: &mut [f32]);
    /// Element-wise sums over the ranks, in place, in f64.
    fn sum_f64(&self, values: &mut [f64]);
    /// Element-wise sums over the ranks of a tensor on this rank's device; by default
    /// through host memory and [`Self::sum_f32`].
    fn sum_tensor(&self, values: Tensor<1>) -> Tensor<1> {
        sum_through_host(self, values)
    }
    /// Whether [`Self::sum_tensor`] sums on the ranks' GPUs rather than through host memory.
    fn sums_on_gpus(&self) -> bool {
        false
    }
    /// Replaces `bytes` on every rank by `root`'s.
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>);
    /// Ends every rank's process at once, for an error only this rank knows of (the others
    /// would wait for it in their next collective).
    fn abort(&self, code: i32) -> !;
}

/// [`Collective::sum_tensor`] through host memory: the values leave the device, are summed
/// with [`Collective::sum_f32`] and come back.
#[allow(clippy::expect_used, reason = "cannot fail: converted to f32")]
pub(crate) fn sum_through_host<C: Collective + ?Sized>(world: &C, values: Tensor<1>) -> Tensor<1> {
    let device = values.device();
    let mut host = values
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32");
    world.sum_f32(&mut host);
    let len = host.len();
    Tensor::from_data(TensorData::new(host, [len]), &device)
}

/// A world of one process.
pub(crate) struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn broadcast(&self, _: usize, _: &mut Vec<u8>) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error(
        "{launcher} started {ranks} processes, but this mmix was built without MPI: build it with `cargo build --release --features mpi` (each process would train the whole run alone)"
    )]
    NotBuiltWithMpi {
        launcher: &'static str,
        ranks: usize,
    },
    #[error(
        "srun started {ranks} processes without a process-management interface for MPI: run `srun --mpi=pmix ...` (or set MpiDefault=pmix in slurm.conf)"
    )]
    NoProcessManager { ranks: usize },
    #[error("MPI did not start: {0}")]
    MpiInit(String),
    #[error(
        "the global batch of {batch} is smaller than the {ranks} ranks: give --batch-size {ranks} or more"
    )]
    BatchBelowRanks { batch: usize, ranks: usize },
    #[error(
        "--partner-groups {groups} does not split over {ranks} ranks: give a multiple of {ranks}"
    )]
    GroupsNotSplit { groups: usize, ranks: usize },
}

/// The launcher that started this process and how many processes it started, from the
/// environment each launcher sets; `None` when started alone (or as one process).
pub(crate) fn launched_ranks() -> Option<(&'static str, usize)> {
    launched_ranks_in(|variable| std::env::var(variable).ok())
}

/// [`launched_ranks`] in the environment `variable` reads.
fn launched_ranks_in(variable: impl Fn(&str) -> Option<String>) -> Option<(&'static str, usize)> {
    const LAUNCHERS: [(&str, &str); 3] = [
        ("mpirun (Open MPI)", "OMPI_COMM_WORLD_SIZE"),
        ("mpiexec or srun (PMI)", "PMI_SIZE"),
        ("srun", "SLURM_STEP_NUM_TASKS"),
    ];
    LAUNCHERS.iter().find_map(|&(launcher, name)| {
        let ranks: usize = variable(name)?.trim().parse().ok()?;
        (ranks > 1).then_some((launcher, ranks))
    })
}

/// Checks that MPI can learn its ranks from the launcher: `srun` tells MPI only through a
/// process-management interface (`--mpi=pmix` or `pmi2`), and without one each MPI process
/// would fail to start with a page of its own errors. `names` are the environment's names.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn check_process_manager<'a>(
    launcher: &str,
    ranks: usize,
    mut names: impl Iterator<Item = &'a str>,
) -> Result<(), DistributedError> {
    let managed = launcher != "srun"
        || names.any(|name| name.starts_with("PMIX_") || name.starts_with("PMI_"));
    match managed {
        true => Ok(()),
        false => Err(DistributedError::NoProcessManager { ranks }),
    }
}

/// How many ranks share this machine, from the launcher's environment (1 when alone); known
/// before MPI starts, so that each rank can take its share of the cores.
pub(crate) fn ranks_on_this_machine() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_STEP_TASKS_PER_NODE",
    ]
    .iter()
    .find_map(|variable| {
        let text = std::env::var(variable).ok()?;
        // Slurm writes "2(x3)" for three nodes of two tasks each.
        text.split(['(', ',']).next()?.trim().parse().ok()
    })
    .filter(|&ranks: &usize| ranks > 0)
    .unwrap_or(1)
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// Joins the world the launcher started: MPI when several processes were launched, else a
/// world of one. Called once, early, by the `mmix` binary; later calls return the same world.
pub fn init() -> Result<&'static dyn Collective, DistributedError> {
    if let Some(world) = WORLD.get() {
        return Ok(world.as_ref());
    }
    let world: Box<dyn Collective> = match launched_ranks() {
        None => Box::new(Solo),
        #[cfg(feature = "mpi")]
        Some((launcher, ranks)) => {
            let names: Vec<String> = std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .collect();
            check_process_manager(launcher, ranks, names.iter().map(String::as_str))?;
            Box::new(mpi_world::MpiWorld::start()?)
        }
        #[cfg(not(feature = "mpi"))]
        Some((launcher, ranks)) => {
            return Err(DistributedError::NotBuiltWithMpi { launcher, ranks });
        }
    };
    Ok(WORLD.get_or_init(|| world).as_ref())
}

/// The calling thread's world: its ranks' if it is one of [`threads::run_on_threads`]'s,
/// else the world joined by [`init`], else (never joined: a program using the library
/// without a launcher) a world of one.
pub fn world() -> &'static dyn Collective {
    threads::thread_world().unwrap_or_else(|| WORLD.get_or_init(|| Box::new(Solo)).as_ref())
}

/// Leaves the world: MPI requires every rank to say so before its process ends.
pub fn finish() {
    #[cfg(feature = "mpi")]
    mpi_world::finish();
}

/// The rows of the global batch of `batch` that `rank` of `ranks` trains on: a contiguous
/// share, the same cut as the mixing's partner groups ([`crate::mixup::group_rows`]), so a
/// rank holding whole groups holds every partner of its rows.
pub fn shard(batch: usize, ranks: usize, rank: usize) -> Range<usize> {
    crate::mixup::group_rows(batch, ranks, rank)
}

/// Checks that a run with a global batch of `batch` and `groups` partner groups can be
/// spread over `ranks` ranks.
pub fn check_split(batch: usize, groups: usize, ranks: usize) -> Result<(), DistributedError> {
    if batch < ranks {
        return Err(DistributedError::BatchBelowRanks { batch, ranks });
    }
    if !groups.is_multiple_of(ranks) {
        return Err(DistributedError::GroupsNotSplit { groups, ranks });
    }
    Ok(())
}

/// Why a step the ranks took together failed: here, or on another rank (whose message every
/// rank then reports, so that no rank ends without saying why).
#[derive(Debug)]
pub enum Failure<E> {
    /// This rank failed.
    Here(E),
    /// Another rank failed.
    OnRank {
        /// The lowest failing rank.
        rank: usize,
        /// Its error message.
        message: String,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Here(error) => write!(f, "{error}"),
            Failure::OnRank { rank, message } => write!(f, "rank {rank}: {message}"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for Failure<E> {}

/// Every rank's outcome of a step they all took, agreed on: `Ok` only where it is `Ok` on every
/// rank. A rank that failed keeps its own error; the others get the lowest failing rank's
/// message. Every rank must call it at the same point.
pub fn agree<T, E: std::fmt::Display>(
    world: &dyn Collective,
    local: Result<T, E>,
) -> Result<T, Failure<E>> {
    if world.size() == 1 {
        return local.map_err(Failure::Here);
    }
    let mut failed = vec![0.0f64; world.size()];
    if local.is_err() {
        failed[world.rank()] = 1.0;
    }
    world.sum_f64(&mut failed);
    let Some(first) = failed.iter().position(|&f| f > 0.0) else {
        return local.map_err(Failure::Here);
    };
    let mut message = match &local {
        Err(error) if world.rank() == first => error.to_string().into_bytes(),
        _ => Vec::new(),
    };
    world.broadcast(first, &mut message);
    match local {
        Err(error) => Err(Failure::Here(error)),
        Ok(_) => Err(Failure::OnRank {
            rank: first,
            message: String::from_utf8_lossy(&message).into_owned(),
        }),
    }
}

/// Rank 0's bytes on every rank: what rank 0 read (a checkpoint, a config) reaches ranks on
/// machines that do not share its files.
pub(crate) fn from_rank_zero(world: &dyn Collective, mut bytes: Vec<u8>) -> Vec<u8> {
    world.broadcast(0, &mut bytes);
    bytes
}

#[cfg(test)]
mod tests;
