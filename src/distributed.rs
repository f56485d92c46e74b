//! Data-parallel training over MPI (the `distributed` cargo feature): the runtime's
//! [`Collective`] on Open MPI's `MPI_COMM_WORLD`, through rsmpi.
//!
//! `mpirun -np N resnetc run MODEL --train --distributed` starts N processes; each is one rank
//! and one replica of the model. MPI is initialized only when `--distributed` is given, so
//! every other command runs as before in a build with the feature.

use crate::driver::{exit, CliError};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;
use resnetc_runtime::collective::Collective;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// This process's membership of the MPI job. Dropping it finalizes MPI.
pub struct MpiJob {
    rank: usize,
    size: usize,
    /// MPI is initialized for calls from the main thread only (`MPI_THREAD_FUNNELED`): the
    /// executor and its BatchNorm sums run there. The lock keeps calls one at a time anyway.
    lock: Mutex<()>,
    busy_nanos: AtomicU64,
    _universe: Universe,
}

impl std::fmt::Debug for MpiJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MpiJob {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl MpiJob {
    /// Joins the job `mpirun` started (or a job of one process without `mpirun`).
    pub fn init() -> Result<MpiJob, CliError> {
        let (universe, provided) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| CliError::Internal("MPI was initialized twice".into()))?;
        if provided < Threading::Funneled {
            return Err(CliError::usage(format!(
                "this MPI library gives thread support {provided:?}, and resnetc's worker \
                 threads need at least Funneled (MPI_THREAD_FUNNELED); use an MPI built with \
                 thread support (Debian's Open MPI is)"
            )));
        }
        let world = universe.world();
        Ok(MpiJob {
            rank: world.rank() as usize,
            size: world.size() as usize,
            lock: Mutex::new(()),
            busy_nanos: AtomicU64::new(0),
            _universe: universe,
        })
    }

    /// Ends every process of the job with `code` (`MPI_Abort`), so that no rank waits forever
    /// in a sum that a failed rank will never join.
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }

    /// Runs one MPI call under the lock, counting its time.
    fn call<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now();
        let out = f(&SimpleCommunicator::world());
        self.busy_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl Collective for MpiJob {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, buf: &mut [f32]) {
        if self.size > 1 {
            let send = buf.to_vec();
            self.call(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
        }
    }
    fn sum_f64(&self, buf: &mut [f64]) {
        if self.size > 1 {
            let send = buf.to_vec();
            self.call(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
        }
    }
    fn gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        self.call(|w| w.all_gather_into(&value, &mut all[..]));
        all
    }
    fn busy_time(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed))
    }
}

/// Reports `error` on this rank and ends the whole job with its exit code. Rank 0 prints
/// every error. The other ranks print theirs prefixed with their rank, except command-line and
/// model errors, which every rank hits alike: those they leave to rank 0, which they give a
/// moment to print before aborting.
pub fn fail(job: &MpiJob, error: &CliError) -> ! {
    let same_everywhere = matches!(error, CliError::Usage(_) | CliError::Model(_));
    if job.rank == 0 {
        eprint!("{}", error.render());
    } else if same_everywhere {
        std::thread::sleep(Duration::from_secs(2));
    } else {
        eprint!("rank {} of {}: {}", job.rank, job.size, error.render());
    }
    let code = match error.exit_code() {
        0 => exit::INTERNAL,
        c => c,
    };
    job.abort(code)
}
