//! A per-loop pool of fixed-size byte blocks. Connections take blocks when they have bytes
//! to hold and give them back as soon as they are empty, so an idle connection holds none.

use super::conn::Queue;

/// Default block size: one read or one small response.
pub const DEFAULT_BUF_SIZE: usize = 16 * 1024;

/// A free list of equally sized blocks.
pub(crate) struct BufPool {
    size: usize,
    max_free: usize,
    free: Vec<Box<[u8]>>,
    /// Blocks handed out and not yet returned.
    pub(crate) out: usize,
    /// Empty output queues kept for reuse (a connection holds one only while it has output
    /// queued; at most `max_free` are kept). Boxed on purpose: the boxes are what gets
    /// reused, so taking and returning a queue allocates nothing.
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Queue>>,
}

impl BufPool {
    pub(crate) fn new(size: usize, max_free: usize) -> BufPool {
        BufPool {
            size,
            max_free,
            free: Vec::with_capacity(max_free),
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
        if self.queues.len() < self.max_free {
            self.queues.push(q);
        }
    }

    /// A block of `block_size()` bytes (contents unspecified).
    pub(crate) fn get(&mut self) -> Box<[u8]> {
        self.out += 1;
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    /// Returns a block; blocks of another size, or beyond the free-list cap, are freed.
    pub(crate) fn put(&mut self, b: Box<[u8]>) {
        self.out = self.out.saturating_sub(1);
        if b.len() == self.size && self.free.len() < self.max_free {
            self.free.push(b);
        }
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
    fn reuses_and_caps() {
        let mut p = BufPool::new(64, 2);
        let a = p.get();
        let b = p.get();
        let c = p.get();
        assert_eq!(p.out, 3);
        let pa = a.as_ptr();
        p.put(a);
        p.put(b);
        p.put(c);
        assert_eq!(p.idle(), 2, "capped");
        let d = p.get();
        assert_eq!(d.len(), 64);
        assert!(d.as_ptr() != pa || p.idle() == 1);
        p.put(vec![0u8; 10].into_boxed_slice());
        assert_eq!(p.idle(), 1, "wrong size dropped");
    }
}
