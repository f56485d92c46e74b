//! Keeping the thread pool awake for the length of one run.
//!
//! Rayon's idle workers go to sleep within microseconds, and waking one costs tens of
//! microseconds: at batch 1 a whole ResNet-20 layer takes 50 to 80 µs, so every hand-off to
//! the other thread costs about as much as it saves. [`with_pool_spinning`] runs a closure on
//! a pool worker while every other worker busy-waits (stealing any job the moment it is
//! pushed) until the closure returns, as ONNX Runtime's thread pool spins between ops. The
//! price is the other cores held at 100 % during the run, and none after it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Set on the thread that runs [`with_pool_spinning`]'s closure, while it runs.
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs inside [`with_pool_spinning`], so that a hand-off of a few
/// microseconds of work to the other workers pays: kernels split small work only then.
pub fn pool_is_spinning() -> bool {
    SPINNING.with(Cell::get)
}

/// Runs `f` inside the current rayon pool with its other workers kept awake and stealing
/// until `f` returns. With one thread it just runs `f`.
pub fn with_pool_spinning<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    if threads < 2 {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        // The helpers are pushed before `f` pushes any job. Thieves take the oldest job
        // first, so a worker that steals any of `f`'s jobs has already taken every helper,
        // and `f`'s own worker never pops a helper while `f` is still on its stack (which
        // would spin forever).
        for _ in 1..threads {
            scope.spawn(|_| {
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set on the way out even when `f` panics: the scope waits for the helpers before
        // it passes the panic on.
        struct Release<'a>(&'a AtomicBool, bool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                SPINNING.with(|s| s.set(self.1));
                self.0.store(true, Ordering::Release);
            }
        }
        let _release = Release(&done, SPINNING.with(|s| s.replace(true)));
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn runs_the_closure_and_its_parallel_work_then_releases_the_workers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for round in 0..20u64 {
            let sum = pool.install(|| {
                with_pool_spinning(|| {
                    (0..10_000u32)
                        .into_par_iter()
                        .with_min_len(100)
                        .map(|i| u64::from(i) * round)
                        .sum::<u64>()
                })
            });
            assert_eq!(sum, round * 10_000 * 9_999 / 2);
        }
        // The workers are free again: plain pool work still completes.
        assert_eq!(pool.install(|| rayon::join(|| 1, || 2)), (1, 2));
    }

    #[test]
    fn a_panic_in_the_closure_reaches_the_caller_and_frees_the_workers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| with_pool_spinning(|| panic!("kernel failed")))
        }));
        assert!(caught.is_err());
        assert_eq!(
            pool.install(|| with_pool_spinning(|| rayon::join(|| 5, || 6))),
            (5, 6)
        );
    }

    #[test]
    fn nested_calls_and_one_thread_pools_work() {
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| with_pool_spinning(|| 7)), 7);
        assert!(!pool_is_spinning());
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let v = two.install(|| {
            with_pool_spinning(|| {
                let inner = with_pool_spinning(|| (rayon::join(|| 3, || 4), pool_is_spinning()));
                (inner, pool_is_spinning())
            })
        });
        assert_eq!(v, (((3, 4), true), true));
        assert!(!two.install(pool_is_spinning));
    }
}
