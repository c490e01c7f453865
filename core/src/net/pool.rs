//! A per-loop pool of fixed-size byte blocks. Connections take blocks when they have bytes
//! to hold and give them back as soon as they are empty, so an idle connection holds none.
//!
//! Returned blocks are all kept, and blocks that stayed unused for a whole period (one to
//! two seconds) are freed, down to `min_free`. A fixed cap did not fit io_uring: every
//! connection answered in one iteration holds its output block until the completions are
//! reaped, so with a cap of 64 under 10,000 busy connections about a thousand 16 KiB blocks
//! were freed and allocated (zeroed) again each iteration: 6.5% of the loop's CPU went to
//! `memset` (perf). The pool now holds at most what was recently in use at once.

use std::time::{Duration, Instant};

use super::conn::Queue;

/// Default block size: one read or one small response.
pub const DEFAULT_BUF_SIZE: usize = 16 * 1024;

/// How long a free block may stay unused before it is freed (at most twice this).
const TRIM_PERIOD: Duration = Duration::from_secs(1);

/// A free list of equally sized blocks.
pub(crate) struct BufPool {
    size: usize,
    /// Free blocks kept however long they stay unused.
    min_free: usize,
    free: Vec<Box<[u8]>>,
    /// The fewest free blocks since the last trim: that many went unused all along.
    low: usize,
    next_trim: Option<Instant>,
    /// Blocks handed out and not yet returned.
    pub(crate) out: usize,
    /// Empty output queues kept for reuse (a connection holds one only while it has output
    /// queued; at most `min_free` are kept). Boxed on purpose: the boxes are what gets
    /// reused, so taking and returning a queue allocates nothing.
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Queue>>,
}

impl BufPool {
    pub(crate) fn new(size: usize, min_free: usize) -> BufPool {
        BufPool {
            size,
            min_free,
            free: Vec::with_capacity(min_free),
            low: 0,
            next_trim: None,
            out: 0,
            queues: Vec::new(),
        }
    }

    /// An empty output queue.
    pub(crate) fn queue(&mut self) -> Box<Queue> {
        self.queues.pop().unwrap_or_default()
    }

    /// Returns an empty output queue (its chunk buffer, if it grew one, is kept with it).
    pub(crate) fn put_queue(&mut self, q: Box<Queue>) {
        debug_assert!(q.is_empty());
        if self.queues.len() < self.min_free {
            self.queues.push(q);
        }
    }

    /// The size of a block.
    pub(crate) fn block_size(&self) -> usize {
        self.size
    }

    /// A block of `block_size()` bytes (contents unspecified).
    pub(crate) fn get(&mut self) -> Box<[u8]> {
        self.out += 1;
        match self.free.pop() {
            Some(b) => {
                self.low = self.low.min(self.free.len());
                b
            }
            None => {
                self.low = 0;
                vec![0u8; self.size].into_boxed_slice()
            }
        }
    }

    /// Returns a block (one of another size is freed).
    pub(crate) fn put(&mut self, b: Box<[u8]>) {
        self.out = self.out.saturating_sub(1);
        self.replaced(b);
    }

    /// Takes back the block a holder just replaced with a larger buffer, which it still
    /// holds in its place (and returns with `put`): the count of blocks out stays.
    pub(crate) fn replaced(&mut self, b: Box<[u8]>) {
        if b.len() == self.size {
            self.free.push(b);
        }
    }

    /// When the loop should wake up to trim: while more than `min_free` blocks are free.
    pub(crate) fn trim_deadline(&self) -> Option<Instant> {
        self.next_trim.filter(|_| self.free.len() > self.min_free)
    }

    /// Called once per loop iteration with the loop's time: once a period has passed, frees
    /// the blocks that stayed unused through all of it (keeping `min_free`).
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.next_trim.is_some_and(|t| now < t) {
            return;
        }
        let excess = self.low.min(self.free.len().saturating_sub(self.min_free));
        if excess > 0 {
            self.free.truncate(self.free.len() - excess);
            let keep = self.free.len().max(self.min_free);
            if self.free.capacity() > 4 * keep {
                self.free.shrink_to(keep);
            }
        }
        self.low = self.free.len();
        self.next_trim = Some(now + TRIM_PERIOD);
    }

    /// Blocks kept for reuse.
    pub(crate) fn idle(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_was_used_and_frees_what_was_not() {
        let t0 = Instant::now();
        let mut p = BufPool::new(64, 2);
        p.tick(t0);
        let held: Vec<_> = (0..10).map(|_| p.get()).collect();
        assert_eq!(p.out, 10);
        let pa = held[0].as_ptr();
        for b in held {
            p.put(b);
        }
        assert_eq!(p.idle(), 10, "all returned blocks are kept");
        // The blocks were in use during this period: the trim keeps them.
        p.tick(t0 + TRIM_PERIOD);
        assert_eq!(p.idle(), 10);
        // Reused without allocating.
        let b = p.get();
        assert!(p.idle() == 9 && b.len() == 64);
        let same = b.as_ptr() == pa || p.free.iter().any(|f| f.as_ptr() == pa);
        assert!(same, "the block came back");
        p.put(b);
        // A period in which at most one was taken: nine stayed unused, freed down to 2.
        p.tick(t0 + 2 * TRIM_PERIOD);
        assert_eq!(p.idle(), 2);
        p.tick(t0 + 3 * TRIM_PERIOD);
        assert_eq!(p.idle(), 2, "min_free stay");
        p.put(vec![0u8; 10].into_boxed_slice());
        assert_eq!(p.idle(), 2, "wrong size dropped");
    }
}
