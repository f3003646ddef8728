//! Helpers for running work on the rayon thread pool.

/// Runs `work` on one worker of the pool while every other worker stays
/// awake, running the pool's jobs as they appear (`rayon::yield_now`) and
/// polling in between, until `work` returns.
///
/// For work made of many short parallel regions (an inference plan: dozens
/// of regions of tens of microseconds; a training step on small images).
/// Between two regions an idle rayon worker soon goes to sleep, and waking
/// it takes about as long as a whole region: the regions would then run on
/// one thread. Polling helpers cost CPU time only while `work` runs; they
/// give their core away when another thread wants it (more workers than
/// cores). Called from outside the pool, `work` runs on the pool's first
/// worker.
pub fn awake_workers<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Sets the flag when dropped, so helpers stop even if `work` panics.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    let work = Mutex::new(Some(work));
    let mut results = rayon::broadcast(|ctx| {
        if ctx.index() == 0 {
            let _done = Done(&done);
            let work = work.lock().ok().and_then(|mut w| w.take());
            work.map(|w| w())
        } else {
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    // Gives the core away only if another thread wants it
                    // (more workers than cores).
                    std::thread::yield_now();
                }
            }
            None
        }
    });
    results.swap_remove(0).expect("worker 0 runs the work")
}
