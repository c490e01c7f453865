//! Topics: per loop thread. A connection subscribes on its own loop; publishing reaches
//! the subscribers on the publishing thread's loop only (a multi-threaded server or a
//! pool of worker processes has one set of topics per loop: to reach every subscriber,
//! publish on each loop, e.g. through [`crate::Handle::post`]).
//!
//! Publishing encodes the frame once (and compresses it once, for the subscribers that
//! use permessage-deflate: the server never keeps a compression context, so the bytes are
//! the same for all of them) and queues the same reference-counted bytes on every
//! subscriber: no per-subscriber copy or encode. A subscriber whose queue would pass its
//! `max_backpressure` does not get the message (or is closed, by its options).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::{deflate, frame, Pending, Phase, Sent, WebSocket};

thread_local! {
    static TOPICS: RefCell<HashMap<Rc<str>, Vec<WebSocket>>> = RefCell::new(HashMap::new());
    static STATS: Cell<WsStats> = const { Cell::new(WsStats { published: 0, encoded: 0, delivered: 0, dropped: 0 }) };
}

/// Pub/sub counts of the calling thread's loop since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Messages published.
    pub published: u64,
    /// Frames encoded for them (at most two per message: plain and compressed).
    pub encoded: u64,
    /// Frames queued on subscribers.
    pub delivered: u64,
    /// Subscribers skipped for backpressure.
    pub dropped: u64,
}

/// The calling thread's pub/sub counts.
pub fn stats() -> WsStats {
    STATS.with(Cell::get)
}

fn bump(f: impl FnOnce(&mut WsStats)) {
    STATS.with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

/// How many connections of this loop are subscribed to `topic`.
pub fn subscribers(topic: &str) -> usize {
    TOPICS.with(|t| t.borrow().get(topic).map_or(0, Vec::len))
}

pub(crate) fn subscribe(ws: &WebSocket, topic: &str) -> bool {
    if ws.0.phase.get() == Phase::Closed {
        return false;
    }
    if ws.is_subscribed(topic) {
        return true;
    }
    TOPICS.with(|t| {
        let mut t = t.borrow_mut();
        let key = match t.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Rc::from(topic),
        };
        t.entry(key.clone()).or_default().push(ws.clone());
        ws.0.topics.borrow_mut().push(key);
    });
    true
}

pub(crate) fn unsubscribe(ws: &WebSocket, topic: &str) -> bool {
    let Some(i) = ws.0.topics.borrow().iter().position(|t| &**t == topic) else {
        return false;
    };
    ws.0.topics.borrow_mut().swap_remove(i);
    TOPICS.with(|t| {
        let mut t = t.borrow_mut();
        if let Some(subs) = t.get_mut(topic) {
            subs.retain(|s| !Rc::ptr_eq(&s.0, &ws.0));
            if subs.is_empty() {
                t.remove(topic);
            }
        }
    });
    true
}

/// Leaves every topic (the connection closed).
pub(crate) fn leave_all(ws: &WebSocket) {
    let topics = std::mem::take(&mut *ws.0.topics.borrow_mut());
    for topic in topics {
        ws.0.topics.borrow_mut().push(topic.clone());
        unsubscribe(ws, &topic);
    }
}

/// Publishes a message to every subscriber of `topic` on this thread's loop; returns how
/// many got it (queued).
pub fn publish(topic: &str, data: &[u8], binary: bool) -> usize {
    publish_from(None, topic, data, binary)
}

pub(crate) fn publish_from(
    except: Option<&WebSocket>,
    topic: &str,
    data: &[u8],
    binary: bool,
) -> usize {
    // The subscribers, cloned out (an Rc each) so that a callback a send may cause cannot
    // meet the map borrowed.
    let subs: Vec<WebSocket> = TOPICS.with(|t| t.borrow().get(topic).cloned().unwrap_or_default());
    bump(|s| s.published += 1);
    let op = if binary {
        frame::OP_BINARY
    } else {
        frame::OP_TEXT
    };
    let mut plain: Option<Rc<[u8]>> = None;
    let mut packed: Option<Rc<[u8]>> = None;
    let mut n = 0;
    for ws in &subs {
        if except.is_some_and(|e| Rc::ptr_eq(&e.0, &ws.0)) || ws.0.phase.get() != Phase::Open {
            continue;
        }
        let compress = ws.0.compress && data.len() >= ws.0.lim.compress_threshold as usize;
        let slot = if compress { &mut packed } else { &mut plain };
        let bytes = slot
            .get_or_insert_with(|| {
                bump(|s| s.encoded += 1);
                if compress {
                    frame::encode(true, true, op, &deflate::compress(data)).into()
                } else {
                    frame::encode(true, false, op, data).into()
                }
            })
            .clone();
        match ws.queue(Pending::Shared(bytes)) {
            Sent::Queued => {
                n += 1;
                bump(|s| s.delivered += 1);
            }
            _ => bump(|s| s.dropped += 1),
        }
    }
    n
}
