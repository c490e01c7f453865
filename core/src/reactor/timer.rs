//! Timers: a slab of timer slots and a binary heap of deadlines. Arming is O(log n),
//! cancelling is O(1) (the slot is freed; its heap entry goes stale and is skipped, and the
//! heap is compacted when stale entries dominate). No syscall is made to arm or cancel: the
//! earliest deadline becomes the timeout of the backend's wait.

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

pub(crate) enum Action {
    /// A user callback.
    Call(TimerFn),
    /// Wake a source with `Ready::TIMER` (connection timeouts: no allocation per arm).
    Source(Token),
}

struct Slot {
    gen: u32,
    live: bool,
    deadline: Instant,
    repeat: Option<Duration>,
    action: Option<Action>,
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
        }
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn add(
        &mut self,
        deadline: Instant,
        repeat: Option<Duration>,
        action: Action,
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

    /// The deadline of an armed timer.
    pub(crate) fn deadline_of(&self, id: TimerId) -> Option<Instant> {
        self.valid(id)
            .then(|| self.slots[id.slot as usize].deadline)
    }

    fn valid(&self, id: TimerId) -> bool {
        self.slots
            .get(id.slot as usize)
            .is_some_and(|s| s.live && s.gen == id.gen)
    }

    /// Cancels a timer in O(1). Returns whether it was armed, and its action (absent when
    /// cancelled from inside its own callback) for the caller to drop outside any borrow.
    pub(crate) fn cancel(&mut self, id: TimerId) -> (bool, Option<Action>) {
        if !self.valid(id) {
            return (false, None);
        }
        (true, self.release(id.slot))
    }

    fn release(&mut self, slot: u32) -> Option<Action> {
        let s = &mut self.slots[slot as usize];
        s.live = false;
        s.gen = s.gen.wrapping_add(1);
        self.live -= 1;
        self.free.push(slot);
        s.action.take()
    }

    /// The earliest live deadline, skipping (and popping) stale heap entries.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
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
        while let Some(d) = self.next_deadline() {
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
                None => match self.timers.release(id.slot) {
                    Some(Action::Call(mut f)) => f(self, id),
                    Some(Action::Source(token)) => self.dispatch(token, crate::Ready::TIMER),
                    None => {}
                },
                Some(every) => {
                    let Some(mut action) = slot.action.take() else {
                        continue;
                    };
                    match &mut action {
                        Action::Call(f) => f(self, id),
                        Action::Source(token) => self.dispatch(*token, crate::Ready::TIMER),
                    }
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
            Action::Call(Box::new(move |lp, _| {
                if let Some(f) = f.take() {
                    f(lp)
                }
            })),
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
        self.timers
            .add(deadline, Some(every), Action::Call(Box::new(f)))
    }

    /// Cancels a timer in O(1), without a syscall. Returns false if it had already fired
    /// (one-shot) or been cancelled. Safe to call from inside the timer's own callback.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        let (was_armed, action) = self.timers.cancel(id);
        drop(action);
        was_armed
    }

    /// Arms a timer that wakes source `token` with [`crate::Ready::TIMER`].
    pub(crate) fn source_timer(&mut self, deadline: Instant, token: Token) -> TimerId {
        self.timers.add(deadline, None, Action::Source(token))
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
        let a = t.add(
            base + Duration::from_millis(30),
            None,
            Action::Source(Token(1)),
        );
        let _b = t.add(
            base + Duration::from_millis(10),
            None,
            Action::Source(Token(2)),
        );
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
                Action::Source(Token(i)),
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
}
