//! What an interest change does to an fd's kqueue filters: the pure part of the kqueue
//! backend, compiled on every platform so that its tests run where the suite runs (Linux).

use super::{Interest, Op};

/// Filter bits remembered per fd by the kqueue backend, and whether they are edge-triggered.
pub(crate) const F_READ: u8 = 1;
pub(crate) const F_WRITE: u8 = 2;
pub(crate) const F_EDGE: u8 = 4;

/// One kevent to queue for a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `EV_ADD`, with `EV_CLEAR` when edge-triggered (on an existing filter: updates it).
    Add { edge: bool },
    /// `EV_DELETE`.
    Delete,
}

/// The filter bits `op` asks for; None for an op that is not an interest change.
pub(crate) fn wanted(op: Op) -> Option<u8> {
    match op {
        Op::Add(i) | Op::Modify(i) => {
            let mut want = 0;
            if i.contains(Interest::READ) {
                want |= F_READ;
            }
            if i.contains(Interest::WRITE) {
                want |= F_WRITE;
            }
            if i.contains(Interest::EDGE) {
                want |= F_EDGE;
            }
            Some(want)
        }
        Op::Delete => Some(0),
        Op::Recv(_) => None,
    }
}

/// The kevents that take an fd from the filters `have` to `want`: for the read filter, then
/// the write filter. A filter kept as it was is left alone (adding it again would
/// re-evaluate it and could report it once more); one whose triggering changes is added
/// again, which updates it.
pub(crate) fn steps(have: u8, want: u8) -> [Option<Step>; 2] {
    let retrigger = (have ^ want) & F_EDGE != 0;
    let edge = want & F_EDGE != 0;
    [F_READ, F_WRITE].map(|bit| {
        if want & bit != 0 {
            (have & bit == 0 || retrigger).then_some(Step::Add { edge })
        } else {
            (have & bit != 0).then_some(Step::Delete)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_EDGE: Option<Step> = Some(Step::Add { edge: true });
    const ADD_LEVEL: Option<Step> = Some(Step::Add { edge: false });
    const DEL: Option<Step> = Some(Step::Delete);

    #[test]
    fn interests_map_to_filters() {
        assert_eq!(
            wanted(Op::Add(Interest::SOCKET_READ)),
            Some(F_READ | F_EDGE)
        );
        assert_eq!(
            wanted(Op::Modify(Interest::SOCKET)),
            Some(F_READ | F_WRITE | F_EDGE)
        );
        assert_eq!(wanted(Op::Add(Interest::WRITE)), Some(F_WRITE));
        assert_eq!(wanted(Op::Delete), Some(0));
        assert_eq!(wanted(Op::Recv(true)), None);
    }

    #[test]
    fn a_change_touches_only_the_filters_that_differ() {
        let rw = F_READ | F_WRITE | F_EDGE;
        let r = F_READ | F_EDGE;
        // A connection registered for reads: one filter.
        assert_eq!(steps(0, r), [ADD_EDGE, None]);
        // Its first short write adds the write filter and leaves the read one alone.
        assert_eq!(steps(r, rw), [None, ADD_EDGE]);
        // Back to reads only: the write filter goes.
        assert_eq!(steps(rw, r), [None, DEL]);
        // Nothing changes: nothing queued.
        assert_eq!(steps(rw, rw), [None, None]);
        // Removal deletes what is there, and only that.
        assert_eq!(steps(rw, 0), [DEL, DEL]);
        assert_eq!(steps(r, 0), [DEL, None]);
        assert_eq!(steps(0, 0), [None, None]);
        // Level to edge-triggered (an fd watcher re-watched): every kept filter is updated.
        assert_eq!(steps(F_READ | F_WRITE, rw), [ADD_EDGE, ADD_EDGE]);
        assert_eq!(steps(rw, F_READ), [ADD_LEVEL, DEL]);
    }
}
