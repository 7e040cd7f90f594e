//! Ranks that are threads of one process, one per device (`--devices cuda:0,cuda:1`): they
//! exchange what MPI ranks would send each other through this process's memory, and ranks
//! on CUDA GPUs sum their gradients on the GPUs, through NCCL.

use std::cell::Cell;
use std::sync::{Arc, Barrier, Mutex, OnceLock};

use burn::tensor::{Device, Tensor};

use super::Collective;

/// Where the rank threads of one run sum tensors ([`Collective::sum_tensor`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorSums {
    /// Each rank's values leave its device, are summed in host memory and come back.
    InHostMemory,
    /// On the ranks' CUDA GPUs, through NCCL, by Burn's `all_reduce` (a build with `cuda`).
    OnGpus,
}

/// One thread's place among the ranks of a [`run_on_threads`] call.
pub(crate) struct ThreadRank {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
    /// Every rank's device, by rank, learnt at the first sum on GPUs.
    group: OnceLock<Vec<Device>>,
}

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
    sums: TensorSums,
    devices: Mutex<Vec<Option<Device>>>,
}

impl ThreadRank {
    /// Every rank's `mine`, by rank. Every rank calls it at the same point.
    fn exchange(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        self.shared.slots.lock().unwrap_or_else(|p| p.into_inner())[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // No rank writes its next values before every rank has read these.
        self.shared.barrier.wait();
        all
    }

    /// Every rank's device, by rank, given this rank's. Every rank calls it at the same point.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: every rank wrote its device"
    )]
    fn devices(&self, mine: Device) -> Vec<Device> {
        self.shared
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())[self.rank] = Some(mine);
        self.shared.barrier.wait();
        // Each rank writes its device once, so nothing changes them once all are written.
        self.shared
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|device| device.clone().expect("every rank wrote its device"))
            .collect()
    }
}

/// Sums fixed-size little-endian numbers element-wise across the ranks' byte strings.
#[allow(clippy::expect_used, reason = "cannot fail: N bytes")]
fn sum_bytes<const N: usize, T: Copy + std::iter::Sum<T>>(
    all: &[Vec<u8>],
    values: &mut [T],
    read: impl Fn([u8; N]) -> T,
) {
    for (k, value) in values.iter_mut().enumerate() {
        *value = all
            .iter()
            .map(|bytes| read(bytes[N * k..N * (k + 1)].try_into().expect("N bytes")))
            .sum();
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn sum_f32(&self, values: &mut [f32]) {
        let all = self.exchange(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        sum_bytes(&all, values, f32::from_le_bytes);
    }
    fn sum_f64(&self, values: &mut [f64]) {
        let all = self.exchange(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        sum_bytes(&all, values, f64::from_le_bytes);
    }
    fn sum_tensor(&self, values: Tensor<1>) -> Tensor<1> {
        match self.shared.sums {
            TensorSums::InHostMemory => super::sum_through_host(self, values),
            TensorSums::OnGpus => {
                let group = self.group.get_or_init(|| self.devices(values.device()));
                sum_on_gpus(values, group)
            }
        }
    }
    fn sums_on_gpus(&self) -> bool {
        self.shared.sums == TensorSums::OnGpus
    }
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) {
        let mine = if self.rank == root {
            std::mem::take(bytes)
        } else {
            Vec::new()
        };
        *bytes = self.exchange(mine).swap_remove(root);
    }
    fn abort(&self, code: i32) -> ! {
        // The other threads may be waiting for this one at a barrier.
        std::process::exit(code)
    }
}

/// NCCL's all-reduce of every rank's `values`, each on its GPU of `group`.
#[cfg(feature = "cuda")]
fn sum_on_gpus(values: Tensor<1>, group: &[Device]) -> Tensor<1> {
    use burn::tensor::distributed::{ReduceOperation, all_reduce};
    all_reduce(values, ReduceOperation::Sum, group.to_vec()).resolve()
}

#[cfg(not(feature = "cuda"))]
fn sum_on_gpus(_: Tensor<1>, _: &[Device]) -> Tensor<1> {
    unreachable!("tensors are summed on GPUs only in a build with the cuda feature")
}

thread_local! {
    /// The world of a rank thread; `None` on every other thread.
    static THREAD_WORLD: Cell<Option<&'static dyn Collective>> = const { Cell::new(None) };
}

/// The world of the calling thread, if it is one of [`run_on_threads`]'s ranks.
pub fn thread_world() -> Option<&'static dyn Collective> {
    THREAD_WORLD.with(Cell::get)
}

/// Runs `body` on `ranks` threads at once, each of them a rank of one world
/// ([`super::world`] on that thread) that sums tensors as `sums` says, and returns what each
/// returned, by rank. A rank whose body panics ends the process: the others would wait for it
/// forever.
#[allow(
    clippy::expect_used,
    reason = "cannot fail: rank threads do not unwind"
)]
pub fn run_on_threads<T: Send>(
    ranks: usize,
    sums: TensorSums,
    body: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    assert!(
        sums == TensorSums::InHostMemory || cfg!(feature = "cuda"),
        "tensors are summed on GPUs only in a build with the cuda feature"
    );
    let shared = Arc::new(Shared {
        barrier: Barrier::new(ranks),
        slots: Mutex::new(vec![Vec::new(); ranks]),
        sums,
        devices: Mutex::new(vec![None; ranks]),
    });
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let world = ThreadRank {
                    rank,
                    size: ranks,
                    shared: shared.clone(),
                    group: OnceLock::new(),
                };
                let body = &body;
                scope.spawn(move || {
                    // One small leak per rank per run: the loop's collectives take the world
                    // for the thread's whole life.
                    let world: &'static dyn Collective = Box::leak(Box::new(world));
                    THREAD_WORLD.with(|cell| cell.set(Some(world)));
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(rank)));
                    THREAD_WORLD.with(|cell| cell.set(None));
                    match outcome {
                        Ok(value) => value,
                        Err(_) => std::process::exit(101),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("rank threads do not unwind"))
            .collect()
    })
}
