//! Value buffers of large tensors and gradients that died, kept on their
//! thread for the next operation that needs a buffer of the same length
//! and overwrites all of it.
//!
//! A training step allocates the same activations and gradients as the
//! step before, and a convolution writes every value of its output and
//! gradients; a fresh buffer would first be zeroed (the allocator's memory
//! is reused, so not zero), a pass over tens of megabytes per layer for
//! nothing (ShuffleNet g8 at 224 × 224, batch 32: 7–11 % of a step).
//! Buffers are matched by exact length and kept per thread (the halves of
//! a split batch each run on their own thread). Only as many of a length
//! are kept as were once wanted and not there (a take that found none
//! raises the count by one): many more tensors die than convolutions
//! need, and keeping them all took memory the allocator then had to fault
//! in anew (ShuffleNet g1's step: 2.8 instead of 0.76 GB, 1.9× slower).
//! Past [`MAX_BYTES`] the oldest go back to the allocator.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

/// Shorter buffers go straight back to the allocator: zeroing them costs
/// little.
const MIN_LEN: usize = 1 << 16;
/// Most bytes kept per thread (a step of ShuffleNet g3 at 224 × 224 frees
/// about 0.6 GiB of activations per half batch).
const MAX_BYTES: usize = 1 << 30;

struct Pool {
    /// Oldest first.
    buffers: VecDeque<Vec<f32>>,
    /// [`MAX_BYTES`], lower in tests.
    limit: usize,
    /// Per length, how many buffers to keep at most: the takes that found
    /// none.
    wanted: BTreeMap<usize, usize>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            buffers: VecDeque::new(),
            limit: MAX_BYTES,
            wanted: BTreeMap::new(),
        })
    };
}

impl Pool {
    /// Bytes held.
    fn bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.len() * 4).sum()
    }

    /// Keeps `v` if fewer buffers of its length are kept than were
    /// wanted, then gives the oldest back while over the limit.
    fn give(&mut self, v: Vec<f32>) {
        let kept = self.buffers.iter().filter(|b| b.len() == v.len()).count();
        if kept >= self.wanted.get(&v.len()).copied().unwrap_or(0) {
            return;
        }
        self.buffers.push_back(v);
        while self.bytes() > self.limit {
            self.buffers.pop_front();
        }
    }

    /// The newest buffer of `len` values (the most recently used memory),
    /// or none, and then one more of that length wanted.
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        let at = self.buffers.iter().rposition(|b| b.len() == len);
        if at.is_none() {
            *self.wanted.entry(len).or_default() += 1;
        }
        self.buffers.remove(at?)
    }
}

/// Keeps `v` for a later [`take`] of its length on this thread, if it is
/// long enough to be worth it.
pub(crate) fn give(v: Vec<f32>) {
    if v.len() >= MIN_LEN {
        // During thread teardown the pool may be gone: `v` is then freed.
        let _ = POOL.try_with(|p| p.borrow_mut().give(v));
    }
}

/// A buffer of `len` values whose contents are arbitrary (those of a dead
/// tensor, or zeros): for an output that the caller overwrites whole.
pub(crate) fn take(len: usize) -> Vec<f32> {
    let kept = if len >= MIN_LEN {
        POOL.try_with(|p| p.borrow_mut().take(len)).ok().flatten()
    } else {
        None
    };
    kept.unwrap_or_else(|| crate::ops::zeroed(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_length_newest_first_within_the_limit() {
        let len = MIN_LEN + 3;
        // Nothing is kept of a length that no take wanted.
        give(vec![1.0; len]);
        assert_eq!(take(len), vec![0.0; len]);
        // Two takes of `len` found none, one of `len + 1`: two and one
        // are kept.
        assert_eq!(take(len), vec![0.0; len]);
        assert_eq!(take(len + 1), vec![0.0; len + 1]);
        for v in 1..=3 {
            give(vec![v as f32; len]);
            give(vec![v as f32; len + 1]);
        }
        assert_eq!(take(len), vec![2.0; len]);
        assert_eq!(take(len), vec![1.0; len]);
        assert_eq!(take(len + 1), vec![1.0; len + 1]);
        // None left: zeros (and one more wanted of each).
        assert_eq!(take(len), vec![0.0; len]);
        assert_eq!(take(len + 1), vec![0.0; len + 1]);
        // Short buffers are not kept.
        give(vec![4.0; 10]);
        assert_eq!(take(10), vec![0.0; 10]);
        // Three of `len` wanted now; past the byte limit (two of them) the
        // oldest go first.
        POOL.with(|p| p.borrow_mut().limit = 2 * len * 4);
        for v in 1..=3 {
            give(vec![v as f32; len]);
        }
        POOL.with(|p| assert_eq!(p.borrow().bytes(), 2 * len * 4));
        assert_eq!(take(len)[0], 3.0);
        assert_eq!(take(len)[0], 2.0);
        assert_eq!(take(len), vec![0.0; len], "the oldest was given back");
    }
}
