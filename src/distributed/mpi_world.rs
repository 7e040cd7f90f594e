//! The world of an MPI launch (`mpirun`, `mpiexec`, `srun`), through the `mpi` crate.

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::{Collective, DistributedError};

/// MPI allows 2³¹ − 1 elements per call; buffers are sent in pieces below that.
const PIECE: usize = 1 << 30;

/// Until MPI is finished: dropping the universe calls `MPI_Finalize`.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

pub(crate) struct MpiWorld {
    /// MPI is started for serialized calls (any thread, one at a time); the lock makes them so.
    world: Mutex<LockedWorld>,
    rank: usize,
    size: usize,
    local_rank: usize,
}

/// The world communicator, moved between threads only under the lock.
struct LockedWorld(SimpleCommunicator);

// SAFETY: MPI is initialised with `Threading::Serialized` (checked in `start`), which lets any
// thread call MPI as long as no two do so at once; every call goes through `MpiWorld::world`'s
// mutex.
unsafe impl Send for LockedWorld {}

impl MpiWorld {
    pub fn start() -> Result<Self, DistributedError> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| DistributedError::MpiInit("MPI was started twice".into()))?;
        if !matches!(
            threading,
            mpi::Threading::Serialized | mpi::Threading::Multiple
        ) {
            return Err(DistributedError::MpiInit(format!(
                "this MPI offers only {threading:?} threading; mmix needs Serialized"
            )));
        }
        let world = universe.world();
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        *UNIVERSE.lock().unwrap_or_else(|p| p.into_inner()) = Some(universe);
        Ok(Self {
            world: Mutex::new(LockedWorld(world)),
            rank,
            size,
            local_rank,
        })
    }

    fn with<T>(&self, call: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let world = self.world.lock().unwrap_or_else(|p| p.into_inner());
        call(&world.0)
    }
}

/// Sums `values` over the ranks, piece by piece, through a receive buffer (MPI's in-place
/// form is not offered by the crate).
fn sum_in_place<T>(world: &SimpleCommunicator, values: &mut [T])
where
    T: Copy + Default + mpi::datatype::Equivalence,
{
    let mut received = vec![T::default(); values.len().min(PIECE)];
    for piece in values.chunks_mut(PIECE) {
        let received = &mut received[..piece.len()];
        world.all_reduce_into(&*piece, received, SystemOperation::sum());
        piece.copy_from_slice(received);
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn sum_f32(&self, values: &mut [f32]) {
        self.with(|world| sum_in_place(world, values));
    }

    fn sum_f64(&self, values: &mut [f64]) {
        self.with(|world| sum_in_place(world, values));
    }

    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) {
        self.with(|world| {
            let root = world.process_at_rank(root as i32);
            let mut length = bytes.len() as u64;
            root.broadcast_into(&mut length);
            bytes.resize(length as usize, 0);
            for piece in bytes.chunks_mut(PIECE) {
                root.broadcast_into(piece);
            }
        });
    }

    fn abort(&self, code: i32) -> ! {
        // Not under the lock: the thread that holds it may be the one waiting for a peer.
        SimpleCommunicator::world().abort(code)
    }
}

/// Finishes MPI (`MPI_Finalize`), if it was started.
pub fn finish() {
    drop(UNIVERSE.lock().unwrap_or_else(|p| p.into_inner()).take());
}
