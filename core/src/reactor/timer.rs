//! Timers: a slab of timer slots and a binary heap of deadlines. Arming is O(log n),
//! cancelling is O(1) (the slot is freed; its heap entry goes stale and is skipped, and the
//! heap is compacted when stale entries dominate). No syscall is made to arm or cancel: the
//! earliest deadline becomes the timeout of the backend's wait.
//!
//! Sources' deadlines (connection timeouts, one per idle connection) skip the slab: a
//! second heap holds just (deadline, token), 16 bytes. They are never cancelled; an entry
//! whose source is gone or no longer due wakes nobody (the source checks its own deadline).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::{Loop, Token};

/// Identifies an armed timer; stale ids are harmless (cancel returns false).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    gen: u32,
}

impl TimerId {
    /// Packs the id into 64 bits (for the C ABI).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.slot)
    }
    /// Unpacks an id made by [`TimerId::to_u64`].
    pub fn from_u64(v: u64) -> TimerId {
        TimerId {
            slot: v as u32,
            gen: (v >> 32) as u32,
        }
    }
}

/// A timer callback: gets the loop and its own id (to cancel a repeating timer).
pub type TimerFn = Box<dyn FnMut(&mut Loop, TimerId)>;

struct Slot {
    gen: u32,
    live: bool,
    deadline: Instant,
    repeat: Option<Duration>,
    action: Option<TimerFn>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: Instant,
    seq: u64,
    slot: u32,
    gen: u32,
}

/// The loop's timers.
pub(crate) struct Timers {
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    live: usize,
    due: Vec<(TimerId, Instant)>,
    /// Sources' wake-ups: (nanoseconds since `base`, token).
    src: BinaryHeap<Reverse<(u64, u64)>>,
    src_due: Vec<Token>,
    base: Instant,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            live: 0,
            due: Vec::new(),
            src: BinaryHeap::new(),
            src_due: Vec::new(),
            base: Instant::now(),
        }
    }

    /// `t` as nanoseconds since the loop started, at least 1 (0 can mean "none").
    pub(crate) fn ns(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(d).unwrap_or(u64::MAX).max(1)
    }

    /// The earliest source wake-up (stale ones included: they cost one empty wake-up).
    fn next_source(&self) -> Option<Instant> {
        self.src
            .peek()
            .map(|Reverse((at, _))| self.base + Duration::from_nanos(*at))
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn add(
        &mut self,
        deadline: Instant,
        repeat: Option<Duration>,
        action: TimerFn,
    ) -> TimerId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    live: false,
                    deadline,
                    repeat: None,
                    action: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.live = true;
        s.deadline = deadline;
        s.repeat = repeat;
        s.action = Some(action);
        let id = TimerId { slot, gen: s.gen };
        self.live += 1;
        self.push(id, deadline);
        id
    }

    fn push(&mut self, id: TimerId, deadline: Instant) {
        if self.heap.len() > 2 * self.live + 1024 {
            self.compact();
        }
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            deadline,
            seq: self.seq,
            slot: id.slot,
            gen: id.gen,
        }));
    }

    /// Drops stale heap entries; amortised O(1) per cancel.
    fn compact(&mut self) {
        let slots = &self.slots;
        // In place: no allocation.
        self.heap.retain(|Reverse(e)| {
            let s = &slots[e.slot as usize];
            s.live && s.gen == e.gen && s.deadline == e.deadline
        });
    }

    fn valid(&self, id: TimerId) -> bool {
        self.slots
            .get(id.slot as usize)
            .is_some_and(|s| s.live && s.gen == id.gen)
    }

    /// Cancels a timer in O(1). Returns whether it was armed, and its action (absent when
    /// cancelled from inside its own callback) for the caller to drop outside any borrow.
    pub(crate) fn cancel(&mut self, id: TimerId) -> (bool, Option<TimerFn>) {
        if !self.valid(id) {
            return (false, None);
        }
        (true, self.release(id.slot))
    }

    fn release(&mut self, slot: u32) -> Option<TimerFn> {
        let s = &mut self.slots[slot as usize];
        s.live = false;
        s.gen = s.gen.wrapping_add(1);
        self.live -= 1;
        self.free.push(slot);
        s.action.take()
    }

    /// The earliest deadline: of a live timer (stale heap entries are popped on the way)
    /// or of a source's wake-up.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        let t = self.next_timer();
        match (t, self.next_source()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_timer(&mut self) -> Option<Instant> {
        while let Some(Reverse(e)) = self.heap.peek() {
            let s = &self.slots[e.slot as usize];
            if s.live && s.gen == e.gen && s.deadline == e.deadline {
                return Some(e.deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Moves every timer due at `now` into the internal due list, in deadline order.
    /// Timers armed while the due list runs wait for the next pass, so a 0 ms timer that
    /// re-arms itself cannot starve I/O.
    fn collect_due(&mut self, now: Instant) {
        let limit = self.ns(now);
        while let Some(Reverse((at, token))) = self.src.peek() {
            if *at > limit {
                break;
            }
            self.src_due.push(Token(*token));
            self.src.pop();
        }
        while let Some(d) = self.next_timer() {
            if d > now {
                break;
            }
            let Reverse(e) = self.heap.pop().expect("peeked");
            self.due.push((
                TimerId {
                    slot: e.slot,
                    gen: e.gen,
                },
                e.deadline,
            ));
        }
    }
}

impl Loop {
    /// Runs every timer whose deadline is at or before the loop's cached time.
    pub(crate) fn run_timers(&mut self) {
        let now = self.now;
        self.timers.collect_due(now);
        if !self.timers.src_due.is_empty() {
            let mut due = std::mem::take(&mut self.timers.src_due);
            for token in due.drain(..) {
                self.dispatch(token, crate::Ready::TIMER);
            }
            self.timers.src_due = due;
        }
        if self.timers.due.is_empty() {
            return;
        }
        let mut due = std::mem::take(&mut self.timers.due);
        for (id, deadline) in due.drain(..) {
            if !self.timers.valid(id) {
                continue;
            }
            let slot = &mut self.timers.slots[id.slot as usize];
            if slot.deadline != deadline {
                continue;
            }
            match slot.repeat {
                None => {
                    if let Some(mut f) = self.timers.release(id.slot) {
                        f(self, id)
                    }
                }
                Some(every) => {
                    let Some(mut action) = slot.action.take() else {
                        continue;
                    };
                    action(self, id);
                    // Re-arm unless the callback cancelled it.
                    if self.timers.valid(id) {
                        let now = self.now;
                        let slot = &mut self.timers.slots[id.slot as usize];
                        let mut next = deadline + every;
                        if next <= now {
                            next = now + every;
                        }
                        slot.deadline = next;
                        slot.action = Some(action);
                        self.timers.push(id, next);
                    }
                }
            }
        }
        self.timers.due = due;
    }

    /// Arms a one-shot timer that calls `f` once `after` has elapsed (never earlier).
    pub fn timer(&mut self, after: Duration, f: impl FnOnce(&mut Loop) + 'static) -> TimerId {
        let mut f = Some(f);
        let deadline = self.deadline_after(after);
        self.timers.add(
            deadline,
            None,
            Box::new(move |lp, _| {
                if let Some(f) = f.take() {
                    f(lp)
                }
            }),
        )
    }

    /// Arms a timer that first fires after `first`, then every `every` until cancelled.
    /// An `every` of zero is treated as one millisecond.
    pub fn repeat(
        &mut self,
        first: Duration,
        every: Duration,
        f: impl FnMut(&mut Loop, TimerId) + 'static,
    ) -> TimerId {
        let every = every.max(Duration::from_millis(1));
        let deadline = self.deadline_after(first);
        self.timers.add(deadline, Some(every), Box::new(f))
    }

    /// Cancels a timer in O(1), without a syscall. Returns false if it had already fired
    /// (one-shot) or been cancelled. Safe to call from inside the timer's own callback.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        let (was_armed, action) = self.timers.cancel(id);
        drop(action);
        was_armed
    }

    /// Wakes source `token` with [`crate::Ready::TIMER`] once `deadline` has passed. Not
    /// cancellable: the source ignores a wake-up it no longer needs. Returns the deadline as
    /// [`Timers::ns`] gives it.
    pub(crate) fn wake_at(&mut self, deadline: Instant, token: Token) -> u64 {
        let at = self.timers.ns(deadline);
        self.wake_at_ns(at, token)
    }

    /// [`Loop::wake_at`] with the deadline in nanoseconds since the loop started.
    pub(crate) fn wake_at_ns(&mut self, at: u64, token: Token) -> u64 {
        let t = &mut self.timers;
        // Entries of closed sources wait for their deadline; drop them once they dominate.
        if t.src.len() > 2 * self.live + 1024 {
            let slots = &self.slots;
            t.src
                .retain(|Reverse((_, tok))| super::live_slot(slots, Token(*tok)).is_some());
        }
        t.src.push(Reverse((at, token.0)));
        at
    }

    /// Number of armed timers.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn deadline_after(&mut self, after: Duration) -> Instant {
        // Measure from the real clock, not the cached iteration time: a timer armed late in
        // a long iteration must not fire early.
        let now = Instant::now();
        now.checked_add(after)
            .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_orders_and_cancel_is_lazy() {
        let mut t = Timers::new();
        let base = Instant::now();
        let a = t.add(base + Duration::from_millis(30), None, Box::new(|_, _| {}));
        let _b = t.add(base + Duration::from_millis(10), None, Box::new(|_, _| {}));
        assert_eq!(t.next_deadline(), Some(base + Duration::from_millis(10)));
        assert!(t.cancel(a).0);
        assert!(!t.cancel(a).0, "double cancel");
        assert_eq!(t.len(), 1);
        t.collect_due(base + Duration::from_millis(20));
        assert_eq!(t.due.len(), 1);
        assert_eq!(t.next_deadline(), None, "cancelled entry skipped");
    }

    #[test]
    fn compaction_bounds_stale_entries() {
        let mut t = Timers::new();
        let base = Instant::now();
        for i in 0..100_000u64 {
            let id = t.add(
                base + Duration::from_secs(1000 + i),
                None,
                Box::new(|_, _| {}),
            );
            t.cancel(id);
        }
        assert_eq!(t.len(), 0);
        assert!(
            t.heap.len() <= 1024 + 2,
            "heap holds {} stale",
            t.heap.len()
        );
        assert!(t.slots.len() == 1, "slots reused: {}", t.slots.len());
    }

    #[test]
    fn source_wakeups_of_closed_sources_are_bounded() {
        let mut lp = Loop::new().unwrap();
        let far = Instant::now() + Duration::from_secs(1000);
        for i in 0..100_000usize {
            // Tokens of no live source, like connections that closed before their deadline.
            lp.wake_at(far, Token::new(i, 3));
        }
        let n = lp.timers.src.len();
        assert!(n <= 1024 + 1, "{n} stale wake-ups kept");
        assert_eq!(
            lp.timers
                .next_deadline()
                .map(|d| d >= far - Duration::from_millis(1)),
            Some(true)
        );
    }
}
