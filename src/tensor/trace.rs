//! Recording which operations a computation runs (for model summaries):
//! inside [`trace`], every operation on this thread appends its name, its
//! inputs and its output, whether or not grad mode is on.

use super::Tensor;
use std::cell::RefCell;

/// One operation seen by [`trace`].
pub struct TracedOp {
    /// The operation (`"conv2d"`, `"batch_norm"`, `"relu"`, …).
    pub op: &'static str,
    /// Its tensor inputs in argument order (for `conv2d`: input, weight,
    /// and bias when there is one).
    pub inputs: Vec<Tensor>,
    pub output: Tensor,
    /// When the operation finished (the time since the previous one is its
    /// duration, for operations run one after another).
    pub finished: std::time::Instant,
    /// The scope of the innermost [`scoped`] call around it.
    pub scope: Option<&'static str>,
}

struct State {
    ops: Vec<TracedOp>,
    scope: Option<&'static str>,
}

thread_local! {
    static TRACE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` and returns what it returned with the operations it ran, in
/// order. Traces do not nest: an inner `trace` takes the operations of its
/// own closure only.
pub fn trace<R>(f: impl FnOnce() -> R) -> (R, Vec<TracedOp>) {
    let outer = TRACE.with(|t| {
        t.borrow_mut().replace(State {
            ops: Vec::new(),
            scope: None,
        })
    });
    // Restore the outer trace even if `f` panics.
    struct Restore(Option<Option<State>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                TRACE.with(|t| *t.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let result = f();
    let state = TRACE.with(|t| t.borrow_mut().take());
    TRACE.with(|t| *t.borrow_mut() = restore.0.take().unwrap_or_default());
    (result, state.map(|s| s.ops).unwrap_or_default())
}

/// Whether a [`trace`] is recording on this thread.
pub fn is_tracing() -> bool {
    TRACE.with(|t| t.borrow().is_some())
}

/// Runs `f` with `scope` attached to the operations it records: where a
/// summary should place parameter-free steps (a residual add, a final
/// pooling). Either a module path (`"features"`) or a path relative to the
/// module of the last operation with parameters (`".."`, `"../.."`).
pub fn scoped<R>(scope: &'static str, f: impl FnOnce() -> R) -> R {
    let previous = TRACE.with(|t| t.borrow_mut().as_mut().map(|s| s.scope.replace(scope)));
    let result = f();
    if let Some(previous) = previous {
        TRACE.with(|t| {
            if let Some(s) = t.borrow_mut().as_mut() {
                s.scope = previous;
            }
        });
    }
    result
}

/// Appends an operation to the active trace, if any.
pub(super) fn record(op: &'static str, inputs: &[&Tensor], output: &Tensor) {
    TRACE.with(|t| {
        if let Some(state) = t.borrow_mut().as_mut() {
            state.ops.push(TracedOp {
                op,
                inputs: inputs.iter().map(|&x| x.clone()).collect(),
                output: output.clone(),
                finished: std::time::Instant::now(),
                scope: state.scope,
            });
        }
    });
}
