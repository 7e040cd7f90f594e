//! Ranks that are threads of one process, one per device (`--devices cuda:0,cuda:1`): they
//! exchange what MPI ranks would send each other through this process's memory.

use std::cell::Cell;
use std::sync::{Arc, Barrier, Mutex};

use super::Collective;

/// One thread's place among the ranks of a [`run_on_threads`] call.
pub struct ThreadRank {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
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
}

/// Sums fixed-size little-endian numbers element-wise across the ranks' byte strings.
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

thread_local! {
    /// The world of a rank thread; `None` on every other thread.
    static THREAD_WORLD: Cell<Option<&'static dyn Collective>> = const { Cell::new(None) };
}

/// The world of the calling thread, if it is one of [`run_on_threads`]'s ranks.
pub fn thread_world() -> Option<&'static dyn Collective> {
    THREAD_WORLD.with(Cell::get)
}

/// Runs `body` on `ranks` threads at once, each of them a rank of one world
/// ([`super::world`] on that thread), and returns what each returned, by rank. A rank whose
/// body panics ends the process: the others would wait for it forever.
pub fn run_on_threads<T: Send>(ranks: usize, body: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let shared = Arc::new(Shared {
        barrier: Barrier::new(ranks),
        slots: Mutex::new(vec![Vec::new(); ranks]),
    });
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let world = ThreadRank {
                    rank,
                    size: ranks,
                    shared: shared.clone(),
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
