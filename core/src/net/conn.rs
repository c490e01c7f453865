//! Connections: a socket registered edge-triggered for read + rdhup (and for write from its
//! first short write on, with one more `epoll_ctl`), an input
//! buffer and an output queue taken from the loop's pool only while they hold bytes, and a
//! [`Protocol`] that turns input into output. Reads stop at a short read (drained, no extra
//! read to see `EAGAIN`); everything produced from one read goes out in one write; the loop
//! waits for writability only after a short write.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::file::FileRange;
use super::transport::{Layer, Plain, Transport, Wire};
use super::{Accepted, PeerAddr};
use crate::reactor::{Loop, Next, Source, Token};
use crate::sys::{Interest, Ready};

/// `MSG_MORE` where there is one (Linux): more bytes follow at once (a file by sendfile).
#[cfg(target_os = "linux")]
const MSG_MORE: libc::c_int = libc::MSG_MORE;
#[cfg(not(target_os = "linux"))]
const MSG_MORE: libc::c_int = 0;

/// Most iovecs handed to one `sendmsg`.
const MAX_IOV: usize = 64;

/// Static output up to this size is copied into the output block rather than queued as a
/// piece of its own (cheaper than another iovec).
pub(crate) const SMALL_STATIC: usize = 1024;

/// Read/process rounds per event before yielding to other sources.
const MAX_ROUNDS: usize = 8;

/// Plaintext handed to a transport layer at a time: it waits in the output queue (where
/// [`Io::queued`] sees it, for pacing) until the layer's previous output was written.
const LAYER_WINDOW: usize = 64 * 1024;

/// The protocol side of a connection: sans-IO logic driven by the connection.
pub trait Protocol: 'static {
    /// Bytes have arrived: `input` holds everything not consumed so far. Return how many
    /// bytes were consumed; unconsumed bytes are offered again, with more, later. Called
    /// repeatedly while it consumes something and input remains.
    fn on_data(&mut self, io: &mut Io<'_>, input: &[u8]) -> usize;

    /// The peer closed its writing side and all its bytes were offered. By default the
    /// connection closes once queued output is written.
    fn on_eof(&mut self, io: &mut Io<'_>) {
        io.close();
    }

    /// The output queue emptied after [`Io::notify_drained`] asked to be told, or after a
    /// write had blocked ([`Protocol::on_write_blocked`]).
    fn on_drained(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }

    /// A write left output queued because the peer is not reading fast enough; the
    /// connection now waits for writability. `on_drained` follows once it all went out.
    fn on_write_blocked(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }

    /// Something outside the connection's own callbacks asked it to look for work (see
    /// [`Loop::kick`]); buffered input is offered again right after.
    fn on_wake(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }

    /// An outbound connection (see [`Loop::connect`]) completed; queued output goes out
    /// next. (A connection that fails or times out gets `on_close` with the error instead.)
    fn on_connect(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }

    /// The deadline set with [`Io::set_deadline`] passed. By default the connection is
    /// closed at once.
    fn on_timeout(&mut self, io: &mut Io<'_>) {
        io.abort();
    }

    /// The connection is closed (by either side, or an error, given in `err`). Last call.
    fn on_close(&mut self, lp: &mut Loop, token: Token, err: Option<&io::Error>) {
        let _ = (lp, token, err);
    }
}

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnOptions {
    /// Queued output at which reading pauses (backpressure).
    pub high_water: usize,
    /// Queued output at which reading resumes.
    pub low_water: usize,
    /// Largest unconsumed input the connection will hold (a protocol that consumes nothing
    /// from a full buffer this size gets `on_data` no more and should answer and close).
    pub max_input: usize,
    /// Longest a lingering close keeps draining input in all (ms; nginx's `lingering_time`,
    /// 30 s): after an error answer, a client still sending its body has that long to finish
    /// and read the answer before the close (which may then reset it).
    pub linger_ms: u64,
    /// Longest wait for more input while lingering (ms; nginx's `lingering_timeout`, 5 s).
    pub linger_timeout_ms: u64,
}

impl Default for ConnOptions {
    fn default() -> ConnOptions {
        ConnOptions {
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            max_input: 64 * 1024,
            linger_ms: 30_000,
            linger_timeout_ms: 5_000,
        }
    }
}

/// One piece of queued output.
enum Chunk {
    Block {
        buf: Box<[u8]>,
        start: u32,
        end: u32,
    },
    Static(&'static [u8]),
    Owned(Box<dyn AsRef<[u8]>>, u32),
    /// A range of a file (see [`super::file`]): it has no bytes in memory.
    File(Box<FileRange>),
    /// Reference-counted bytes queued on many connections at once (a published
    /// WebSocket frame): each queue holds a count, not a copy.
    Shared(std::rc::Rc<[u8]>, u32),
}

impl Chunk {
    /// The chunk's bytes in memory (none for a file range).
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Block { buf, start, end } => &buf[*start as usize..*end as usize],
            Chunk::Static(s) => s,
            Chunk::Owned(b, pos) => &(**b).as_ref()[*pos as usize..],
            Chunk::Shared(b, pos) => &b[*pos as usize..],
            Chunk::File(_) => &[],
        }
    }
    /// Bytes still to write, a file range's included.
    fn len(&self) -> usize {
        match self {
            Chunk::File(f) => usize::try_from(f.left).unwrap_or(usize::MAX),
            c => c.bytes().len(),
        }
    }
    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Block { start, .. } => *start += n as u32,
            Chunk::Static(s) => *s = &s[n..],
            Chunk::Owned(_, pos) | Chunk::Shared(_, pos) => *pos += n as u32,
            Chunk::File(f) => {
                f.off += n as u64;
                f.left -= n as u64;
            }
        }
    }
}

/// The output queue, boxed and allocated only while it holds bytes: an idle connection
/// spends 8 bytes on it. The first chunk lives inline in the box, so a connection answering
/// one response at a time allocates nothing else for the queue.
#[derive(Default)]
pub(crate) struct Out {
    q: Option<Box<Queue>>,
}

#[derive(Default)]
pub(crate) struct Queue {
    first: Option<Chunk>,
    /// Further chunks (their buffer is allocated only when a second chunk is queued).
    rest: VecDeque<Chunk>,
    len: usize,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty() && self.len == 0
    }
}

impl Out {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.q.as_ref().map_or(0, |q| q.len)
    }

    fn last_mut(&mut self) -> Option<&mut Chunk> {
        let q = self.q.as_deref_mut()?;
        match q.rest.back_mut() {
            Some(c) => Some(c),
            None => q.first.as_mut(),
        }
    }

    fn push(&mut self, lp: &mut Loop, c: Chunk) {
        let q = self.q.get_or_insert_with(|| lp.pool.queue());
        q.len += c.len();
        if q.first.is_none() {
            q.first = Some(c);
        } else {
            q.rest.push_back(c);
        }
    }

    /// Appends an empty pool block to copy into.
    fn push_block(&mut self, lp: &mut Loop) {
        let buf = lp.pool.get();
        self.push(
            lp,
            Chunk::Block {
                buf,
                start: 0,
                end: 0,
            },
        );
    }

    /// Free bytes in the last block, if the last chunk is a block.
    fn tail_room(&self) -> usize {
        let Some(q) = self.q.as_deref() else { return 0 };
        match q.rest.back().or(q.first.as_ref()) {
            Some(Chunk::Block { buf, end, .. }) => buf.len() - *end as usize,
            _ => 0,
        }
    }

    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.q
            .iter()
            .flat_map(|q| q.first.iter().chain(q.rest.iter()))
    }

    pub(crate) fn copy(&mut self, lp: &mut Loop, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = match self.last_mut() {
                Some(Chunk::Block { buf, end, .. }) if (*end as usize) < buf.len() => {
                    let e = *end as usize;
                    let n = (buf.len() - e).min(bytes.len());
                    buf[e..e + n].copy_from_slice(&bytes[..n]);
                    *end += n as u32;
                    n
                }
                _ => 0,
            };
            if n > 0 {
                if let Some(q) = self.q.as_deref_mut() {
                    q.len += n;
                }
                bytes = &bytes[n..];
                continue;
            }
            self.push_block(lp);
        }
    }

    /// Copies several slices in order: one room check and no per-slice queue walk when
    /// they fit the last block (a response head: status line, headers, framing).
    fn copy_parts(&mut self, lp: &mut Loop, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > 0 && self.last_mut().is_none() {
            self.push_block(lp);
        }
        if let Some(Chunk::Block { buf, end, .. }) = self.last_mut() {
            let mut e = *end as usize;
            if buf.len() - e >= total {
                for p in parts {
                    buf[e..e + p.len()].copy_from_slice(p);
                    e += p.len();
                }
                *end = e as u32;
                if let Some(q) = self.q.as_deref_mut() {
                    q.len += total;
                }
                return;
            }
        }
        for p in parts {
            self.copy(lp, p);
        }
    }

    /// Drops the first chunk; frees the queue once it is empty (idle connections hold
    /// nothing).
    fn pop_front(&mut self, lp: &mut Loop) {
        let Some(q) = self.q.as_deref_mut() else {
            return;
        };
        if let Some(Chunk::Block { buf, .. }) = q.first.take() {
            lp.pool.put(buf);
        }
        q.first = q.rest.pop_front();
        if q.first.is_none() {
            q.len = 0;
            if let Some(q) = self.q.take() {
                lp.pool.put_queue(q);
            }
        }
    }

    fn consume(&mut self, lp: &mut Loop, mut n: usize) {
        let Some(q) = self.q.as_deref_mut() else {
            assert_eq!(n, 0, "consumed more than queued");
            return;
        };
        q.len -= n;
        while n > 0 {
            let q = self.q.as_deref_mut().expect("consumed more than queued");
            let c = q.first.as_mut().expect("consumed more than queued");
            let have = c.len();
            if n < have {
                c.advance(n);
                return;
            }
            n -= have;
            self.pop_front(lp);
        }
        // Drop empty leading chunks (a block whose bytes were all sent).
        while self
            .q
            .as_ref()
            .is_some_and(|q| q.first.as_ref().is_some_and(|c| c.len() == 0))
        {
            self.pop_front(lp);
        }
    }

    pub(crate) fn clear(&mut self, lp: &mut Loop) {
        while self.q.is_some() {
            self.pop_front(lp);
        }
    }

    /// The first chunk with bytes left to write, if it is a file range.
    fn front_file(&self) -> Option<&FileRange> {
        match self.chunks().find(|c| c.len() > 0) {
            Some(Chunk::File(f)) => Some(f),
            _ => None,
        }
    }

    /// Drops leading chunks with nothing left to write.
    fn drop_empty_front(&mut self, lp: &mut Loop) {
        while self
            .q
            .as_ref()
            .is_some_and(|q| q.first.as_ref().is_some_and(|c| c.len() == 0))
        {
            self.pop_front(lp);
        }
    }

    /// With a file range first: reads its next bytes (a pool block's worth, framed as the
    /// range says) into a block put in front of it, so that they go out as memory (through
    /// a transport layer, or as FastCGI records). A range read whole is dropped (its file
    /// let go). Only the first chunk is ever read: what is in memory stays one block.
    fn read_front_file(&mut self, lp: &mut Loop) -> io::Result<()> {
        self.drop_empty_front(lp);
        let Some(q) = self.q.as_deref_mut() else {
            return Ok(());
        };
        let Some(Chunk::File(f)) = q.first.as_mut() else {
            return Ok(());
        };
        let mut buf = lp.pool.get();
        let (n, took) = match f.fill(&mut buf, &mut lp.stats) {
            Ok(r) => r,
            Err(e) => {
                lp.pool.put(buf);
                return Err(e);
            }
        };
        let emptied = f.left == 0;
        q.len = q.len + n - took as usize;
        let file = q.first.take().expect("a file chunk");
        q.first = Some(Chunk::Block {
            buf,
            start: 0,
            end: n as u32,
        });
        if emptied {
            drop(file);
        } else {
            q.rest.push_front(file);
        }
        Ok(())
    }
}

/// Parked input ([`In::park`]) is held in a multiple of this many bytes (nginx's
/// `client_header_buffer_size` is 1 KiB).
const PARK_UNIT: usize = 1024;

/// The input buffer: a pool block (or a larger one for big heads, or a small one for a
/// parked remainder) with a window of unconsumed bytes.
#[derive(Default)]
pub(crate) struct In {
    buf: Option<Box<[u8]>>,
    start: u32,
    end: u32,
}

impl In {
    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
    fn window(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    fn release(&mut self, lp: &mut Loop) {
        if let Some(b) = self.buf.take() {
            lp.pool.put(b);
        }
        self.start = 0;
        self.end = 0;
    }
    /// The buffer's size (a pool block taken if there is none).
    fn capacity(&mut self, lp: &mut Loop) -> usize {
        self.buf.get_or_insert_with(|| lp.pool.get()).len()
    }
    /// Moves the unconsumed bytes to the front of the buffer.
    fn compact(&mut self) {
        if let Some(buf) = self.buf.as_mut() {
            buf.copy_within(self.start as usize..self.end as usize, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
    /// Replaces the buffer with one of `len` bytes holding the same input (the pool takes
    /// the old block back; the count of blocks out stays).
    fn grow(&mut self, lp: &mut Loop, len: usize) {
        if let Some(buf) = self.buf.as_mut() {
            let e = self.end as usize;
            let mut bigger = vec![0u8; len].into_boxed_slice();
            bigger[..e].copy_from_slice(&buf[..e]);
            lp.pool.replaced(std::mem::replace(buf, bigger));
        }
    }
    /// Free space of at least `min` bytes after the input (compacting or growing).
    pub(crate) fn spare(&mut self, lp: &mut Loop, min: usize) -> &mut [u8] {
        self.unpark(lp);
        let cap = self.capacity(lp);
        if cap - (self.end as usize) < min && self.start > 0 {
            self.compact();
        }
        let e = self.end as usize;
        if cap - e < min {
            self.grow(lp, (cap * 2).max(e + min));
        }
        match self.buf.as_mut() {
            Some(buf) => &mut buf[e..],
            None => &mut [],
        }
    }
    /// The first `n` bytes after the input (written through [`In::spare`]) are input.
    pub(crate) fn filled(&mut self, n: usize) {
        let cap = self.buf.as_ref().map_or(0, |b| b.len());
        self.end = (self.end as usize + n).min(cap) as u32;
    }
    /// Moves a small remainder of unconsumed input (the start of a request whose rest has
    /// not arrived: a slow client's head) out of its pool block into a buffer just large
    /// enough, and gives the block back, as nginx starts a head in a 1 KiB buffer: 10,000
    /// such connections then hold a few MB instead of 160. The next read or receive moves
    /// it back into a block first ([`In::unpark`]), so reading costs no more syscalls.
    fn park(&mut self, lp: &mut Loop) {
        let n = self.len();
        let block = lp.pool.block_size();
        if n == 0 || n > block / 4 || self.buf.as_ref().is_none_or(|b| b.len() != block) {
            return;
        }
        let mut small = vec![0u8; n.next_multiple_of(PARK_UNIT)].into_boxed_slice();
        small[..n].copy_from_slice(&self.buf.as_ref().expect("checked")[self.window()]);
        if let Some(old) = self.buf.replace(small) {
            // (The small buffer takes the block's place in the count of blocks out.)
            lp.pool.replaced(old);
        }
        self.start = 0;
        self.end = n as u32;
    }
    /// Moves parked input back into a pool block (if it is parked).
    fn unpark(&mut self, lp: &mut Loop) {
        let block = lp.pool.block_size();
        let Some(small) = self.buf.as_ref().filter(|b| b.len() < block) else {
            return;
        };
        let w = self.window();
        let mut b = lp.pool.get();
        b[..w.len()].copy_from_slice(&small[w.clone()]);
        // (`get` counted a block out; the parked buffer held that place: undo one.)
        lp.pool.out -= 1;
        self.buf = Some(b);
        self.start = 0;
        self.end = w.len() as u32;
    }
    /// Appends `data`, growing the buffer as needed (received input cannot be refused).
    pub(crate) fn append(&mut self, lp: &mut Loop, data: &[u8]) {
        self.unpark(lp);
        let (cap, n) = (self.capacity(lp), data.len());
        if cap - (self.end as usize) < n && self.start > 0 {
            self.compact();
        }
        let e = self.end as usize;
        if cap - e < n {
            self.grow(lp, (cap * 2).max(e + n));
        }
        if let Some(buf) = self.buf.as_mut() {
            buf[e..e + n].copy_from_slice(data);
            self.end += n as u32;
        }
    }
    /// Makes room to read into; returns false when the buffer is at `max` and full.
    fn make_room(&mut self, lp: &mut Loop, max: usize) -> bool {
        if self.buf.is_none() {
            self.buf = Some(lp.pool.get());
            return true;
        }
        self.unpark(lp);
        let cap = self.capacity(lp);
        if (self.end as usize) < cap {
            return true;
        }
        if self.start > 0 {
            self.compact();
            return true;
        }
        if cap >= max {
            return false;
        }
        self.grow(lp, (cap * 2).min(max));
        true
    }
}

/// [`ConnOptions`] as stored per connection (saturated to u32).
#[derive(Clone, Copy)]
struct Limits {
    high_water: u32,
    low_water: u32,
    max_input: u32,
    /// The lingering time and timeout, in tenths of a second (16 bits each keep the
    /// connection within 128 bytes).
    linger_ds: u16,
    linger_timeout_ds: u16,
}

impl From<ConnOptions> for Limits {
    fn from(o: ConnOptions) -> Limits {
        let c = |v: usize| v.min(u32::MAX as usize) as u32;
        Limits {
            high_water: c(o.high_water),
            low_water: c(o.low_water),
            // Input indices are u32: cap the largest input at 1 GiB.
            max_input: c(o.max_input.min(1 << 30)),
            linger_ds: o.linger_ms.div_ceil(100).min(u64::from(u16::MAX)) as u16,
            linger_timeout_ds: o.linger_timeout_ms.div_ceil(100).min(u64::from(u16::MAX)) as u16,
        }
    }
}

// Connection flags (bits of `State::flags`).
/// Unread bytes may be waiting (an edge arrived and no short read since).
const CAN_READ: u32 = 1 << 0;
/// The socket can take bytes (no short write since the last writable edge).
const CAN_WRITE: u32 = 1 << 1;
/// EPOLLRDHUP seen: a short read means EOF without reading again.
const PEER_CLOSED: u32 = 1 << 2;
/// The peer's EOF has been read.
const EOF: u32 = 1 << 3;
/// `on_eof` has been called.
const EOF_TOLD: u32 = 1 << 4;
/// The protocol paused reading (or the input buffer is full).
const PAUSED_BY_PROTO: u32 = 1 << 5;
/// Queued output is above the high-water mark.
const PAUSED_BY_OUTPUT: u32 = 1 << 6;
/// Close once output is written.
const CLOSING: u32 = 1 << 7;
/// Write side shut down; draining input before the close.
const LINGERING: u32 = 1 << 8;
/// Close now, dropping output.
const ABORT: u32 = 1 << 9;
/// Call `on_drained` when the output queue empties.
const WANT_DRAIN: u32 = 1 << 10;
/// A flush left output queued (`on_write_blocked` was called).
const BLOCKED: u32 = 1 << 11;
/// The input buffer is full of bytes the protocol has not consumed yet.
const INPUT_FULL: u32 = 1 << 12;
/// An outbound connect is in progress.
const CONNECTING: u32 = 1 << 13;
/// Shut down the write side once output is written.
const SHUT_PENDING: u32 = 1 << 14;
/// The write side is shut down: nothing more is written.
const SHUT_DONE: u32 = 1 << 15;
/// The socket is registered for writability too. Sockets start registered for reading
/// only: on a Unix socket every read by the peer frees space and would wake the loop with a
/// write edge nobody waits for (measured: 2.5 µs per FastCGI request). The first short
/// write adds the write interest, once, for the rest of the connection.
const WRITE_WATCHED: u32 = 1 << 16;
/// A send is queued on the backend (io_uring) or in flight: the output's first
/// `State::sending` bytes belong to the kernel until [`Source::sent`].
const SENDING: u32 = 1 << 17;
/// Input comes from the backend's own receives ([`Source::received`]), never from `recv`
/// calls here; readability is not reported.
const RING_RECV: u32 = 1 << 18;
/// The backend was last told to receive (with `RING_RECV`).
const RECV_ON: u32 = 1 << 19;
/// Received input waits in the buffer to be offered by `drive_io` (a block at a time, and
/// not while reading is paused).
const HELD: u32 = 1 << 20;
/// With `CLOSING`: the peer has sent all it will send ([`Io::close_no_linger`]), so the
/// close skips the shutdown and drain unless input is left unconsumed.
const NO_LINGER: u32 = 1 << 21;
/// The transport layer was told the connection closes (or failed): it produces no more
/// records of the protocol's.
const LAYER_CLOSED: u32 = 1 << 22;
/// The protocol handed the connection to another one ([`Io::hand_off`]): it gets no
/// more calls, and the loop swaps the connection for one driven by the new protocol.
const HANDOFF: u32 = 1 << 23;

/// Connection flags and bookkeeping visible to the protocol through [`Io`].
pub(crate) struct State {
    flags: u32,
    /// Bytes of the send in flight (with `SENDING`). While `LINGERING` (no output, so no
    /// send), the end of the lingering time instead: milliseconds since the loop started,
    /// wrapping (compared by difference; the span is far below 24 days).
    sending: u32,
    token: Token,
    peer: PeerAddr,
    opts: Limits,
    /// The deadline, in nanoseconds since the loop started (0: none).
    deadline: u64,
    /// The earliest wake-up pending for this connection in the loop's timer heap, in
    /// nanoseconds since the loop started (0: none).
    armed: u64,
    error: Option<io::Error>,
}

/// What a [`Protocol`] callback can do to its connection.
pub struct Io<'a> {
    lp: &'a mut Loop,
    out: &'a mut Out,
    st: &'a mut State,
    layer: &'a mut Option<Box<Layer>>,
}

/// Builds the connection driven by the protocol a connection is handed to.
pub(crate) type HandOff = Box<dyn FnOnce(Parts) -> Box<dyn crate::reactor::Source>>;

/// A connection without its protocol, on its way to another one ([`Io::hand_off`]).
pub(crate) struct Parts {
    fd: OwnedFd,
    input: In,
    out: Out,
    st: State,
    layer: Option<Box<Layer>>,
}

impl Io<'_> {
    /// The loop (timers, posting, other sources).
    pub fn lp(&mut self) -> &mut Loop {
        self.lp
    }
    /// The loop's time (see [`Loop::now`]).
    pub fn now(&self) -> Instant {
        self.lp.now()
    }
    /// This connection's token.
    pub fn token(&self) -> Token {
        self.st.token
    }
    /// The peer's address, as accept returned it.
    pub fn peer(&self) -> PeerAddr {
        self.st.peer
    }
    /// Queues a copy of `bytes` (into pool blocks).
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.st.refuses_output() {
            self.out.copy(self.lp, bytes);
        }
    }
    /// Queues a copy of each slice, in order (as many [`Io::write`] calls, cheaper).
    pub fn write_parts(&mut self, parts: &[&[u8]]) {
        if !self.st.refuses_output() {
            self.out.copy_parts(self.lp, parts);
        }
    }
    /// Queues bytes that live forever, without copying (small ones that fit the current
    /// block are copied: cheaper than another iovec, and no queue growth).
    pub fn write_static(&mut self, bytes: &'static [u8]) {
        if self.st.refuses_output() || bytes.is_empty() {
            return;
        }
        if bytes.len() <= SMALL_STATIC && self.out.tail_room() >= bytes.len() {
            self.out.copy(self.lp, bytes);
        } else {
            self.out.push(self.lp, Chunk::Static(bytes));
        }
    }
    /// Queues an owned buffer without copying; it is dropped once written.
    pub fn write_owned(&mut self, bytes: Box<dyn AsRef<[u8]>>) {
        if !self.st.refuses_output() && !(*bytes).as_ref().is_empty() {
            self.out.push(self.lp, Chunk::Owned(bytes, 0));
        }
    }
    /// Queues `len` bytes of `file` from offset `off`, sent by `sendfile(2)` on a plain
    /// socket (read a block at a time through a transport layer); the file is let go once
    /// they are written, or when the connection closes. The file must hold them: a file
    /// that turns out shorter fails the connection (its peer was promised the bytes).
    pub fn write_file(&mut self, file: std::rc::Rc<std::fs::File>, off: u64, len: u64) {
        self.write_file_framed(file, off, len, 0);
    }
    /// [`Io::write_file`] framed as FastCGI STDOUT records of request `records` (0: raw).
    pub(crate) fn write_file_framed(
        &mut self,
        file: std::rc::Rc<std::fs::File>,
        off: u64,
        len: u64,
        records: u16,
    ) {
        if self.st.refuses_output() || len == 0 {
            return;
        }
        let r = FileRange {
            file,
            off,
            left: len,
            records,
        };
        self.out.push(self.lp, Chunk::File(Box::new(r)));
    }
    /// Queues reference-counted bytes without copying them: the queue holds one count of
    /// `bytes` until they are written (the same frame queued on many connections).
    pub fn write_shared(&mut self, bytes: std::rc::Rc<[u8]>) {
        if !self.st.refuses_output() && !bytes.is_empty() {
            self.out.push(self.lp, Chunk::Shared(bytes, 0));
        }
    }
    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }
    /// Asks for one [`Protocol::on_drained`] call when the output queue next empties.
    pub fn notify_drained(&mut self) {
        self.st.set(WANT_DRAIN, true);
    }
    /// Stops (true) or resumes (false) reading from the peer.
    pub fn pause_reading(&mut self, paused: bool) {
        self.st.set(PAUSED_BY_PROTO, paused);
    }
    /// Closes after queued output is written. Unless the peer has already closed its side,
    /// the write side is shut down and input drained (until the peer's EOF or the linger
    /// timeout) first, so that late input does not turn the close into a reset that
    /// destroys the response.
    pub fn close(&mut self) {
        self.st.set(CLOSING, true);
        self.st.set(NO_LINGER, false);
    }
    /// Closes after queued output is written, without the shutdown and drain of
    /// [`Io::close`]: for a protocol that knows its peer has sent everything it will send (a
    /// FastCGI request without `KEEP_CONN` whose input has ended, an HTTP request that asked
    /// for `Connection: close` and was read whole). It saves a `shutdown` and the read of
    /// the peer's EOF per connection. Input left unconsumed in the buffer still gets the
    /// lingering close, and so does a connection [`Io::close`] was (or is later) called on.
    pub fn close_no_linger(&mut self) {
        if !self.st.has(CLOSING) {
            self.st.set(CLOSING | NO_LINGER, true);
        }
    }
    /// Closes now, discarding queued output.
    pub fn abort(&mut self) {
        self.st.set(ABORT, true);
    }
    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.st.has(CLOSING) || self.st.has(ABORT)
    }
    /// Shuts down the write side (the peer reads EOF) once queued output is written;
    /// reading goes on. Later writes are dropped.
    pub fn shutdown_write(&mut self) {
        self.st.set(SHUT_PENDING, true);
    }
    /// Whether the outbound connect is still in progress.
    pub fn is_connecting(&self) -> bool {
        self.st.has(CONNECTING)
    }
    /// Whether reading is paused (by [`Io::pause_reading`], or by output above the
    /// high-water mark).
    pub fn is_reading_paused(&self) -> bool {
        self.st.has(PAUSED_BY_PROTO) || self.st.has(PAUSED_BY_OUTPUT)
    }
    /// Sets the output marks: reading pauses while more than `high` bytes are queued and
    /// resumes at `low` or less (`low` is capped at `high`).
    pub fn set_watermarks(&mut self, low: usize, high: usize) {
        let c = |v: usize| v.min(u32::MAX as usize) as u32;
        self.st.opts.high_water = c(high);
        self.st.opts.low_water = c(low.min(high));
    }

    /// Sets (or clears) the connection's deadline; [`Protocol::on_timeout`] runs when it
    /// passes. Costs no syscall; moving a deadline later costs nothing at all (the armed
    /// timer re-arms itself lazily when it fires).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        set_deadline(self.lp, self.st, deadline);
    }
    /// Puts `t` between the socket and the protocol (see [`Transport`]): from now on the
    /// protocol sees what `t` decodes and its output goes through `t`. Set it before any
    /// input arrived (from `on_connect`, or right after adding an accepted connection);
    /// input already buffered stays as it is. Replaces a previous layer.
    pub fn set_transport(&mut self, t: Box<dyn Transport>) {
        *self.layer = Some(Box::new(Layer {
            t,
            wire: Out::default(),
        }));
    }
    /// The connection's transport layer, if it has one (downcast it with `as_any`).
    pub fn transport(&self) -> Option<&dyn Transport> {
        self.layer.as_deref().map(|l| &*l.t)
    }
    /// Hands the live connection to protocol `next` (an HTTP → WebSocket upgrade): the
    /// socket, its transport layer, queued output and the input not consumed yet (what the
    /// peer sent after the bytes this protocol took) all go to `next`, which gets
    /// `on_wake` then that input through `on_data` as soon as the current callback
    /// returns. This protocol gets no further call (not even `on_close`): it is dropped.
    /// A connection handed off twice goes to the last protocol named.
    pub fn hand_off<Q: Protocol>(&mut self, next: Q) {
        let token = self.st.token;
        self.lp.handoffs.retain(|h| h.0 != token);
        let make: HandOff = Box::new(move |p: Parts| Box::new(Conn::from_parts(p, next)));
        self.lp.handoffs.push((token, Box::new(make)));
        self.st.set(HANDOFF, true);
    }
    /// Sets the deadline `after` from the loop's time (`None`: no deadline). The same as
    /// `set_deadline(after.map(|d| io.now() + d))`, without `Instant` arithmetic.
    pub fn set_timeout(&mut self, after: Option<Duration>) {
        self.st.deadline = after.map_or(0, |d| {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.lp.now_ns().saturating_add(ns)
        });
        arm(self.lp, self.st);
    }
}

impl State {
    fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
    fn refuses_output(&self) -> bool {
        self.flags & (ABORT | SHUT_PENDING | SHUT_DONE) != 0
    }
    fn set(&mut self, f: u32, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }
}

fn set_deadline(lp: &mut Loop, st: &mut State, deadline: Option<Instant>) {
    st.deadline = deadline.map_or(0, |d| lp.timers.ns(d));
    arm(lp, st);
}

/// The loop's time in milliseconds since it started.
fn now_ms(lp: &Loop) -> u64 {
    lp.now_ns() / 1_000_000
}

/// Makes sure a wake-up is pending for the deadline. A wake-up at or before it pending:
/// when it comes it re-arms. Otherwise a new one; a later one still pending will find
/// nothing due and be ignored.
fn arm(lp: &mut Loop, st: &mut State) {
    if st.deadline != 0 && (st.armed == 0 || st.armed > st.deadline) {
        st.armed = lp.wake_at_ns(st.deadline, st.token);
    }
}

/// A connection on a loop, driven by protocol `P`.
pub(crate) struct Conn<P: Protocol> {
    fd: OwnedFd,
    input: In,
    out: Out,
    st: State,
    /// The transport layer, if any (see [`Transport`]); `None` is the plain socket.
    layer: Option<Box<Layer>>,
    proto: P,
}

impl<P: Protocol> Conn<P> {
    fn from_parts(p: Parts, proto: P) -> Conn<P> {
        let Parts {
            fd,
            input,
            out,
            st,
            layer,
        } = p;
        Conn {
            fd,
            input,
            out,
            st,
            layer,
            proto,
        }
    }

    fn io_parts<'a>(&'a mut self, lp: &'a mut Loop) -> (&'a mut P, Io<'a>) {
        let io = Io {
            lp,
            out: &mut self.out,
            st: &mut self.st,
            layer: &mut self.layer,
        };
        (&mut self.proto, io)
    }

    /// Output not yet written: the protocol's, and the transport layer's.
    fn queued(&self) -> usize {
        self.out.len() + self.layer.as_ref().map_or(0, |l| l.wire.len())
    }

    /// Whether anything is left to write, counting the layer's own pending records.
    fn pending(&self) -> bool {
        self.queued() > 0 || self.layer.as_ref().is_some_and(|l| l.t.wants_write())
    }

    /// The queue the socket's sends take bytes from: the layer's output, or the protocol's.
    fn wire_mut(&mut self) -> &mut Out {
        match self.layer.as_deref_mut() {
            Some(l) => &mut l.wire,
            None => &mut self.out,
        }
    }

    /// Tells the layer the connection closes (once); true if that queued records to write.
    fn close_layer(&mut self) -> bool {
        if self.st.has(LAYER_CLOSED) {
            return false;
        }
        let Some(l) = self.layer.as_deref_mut() else {
            return false;
        };
        self.st.set(LAYER_CLOSED, true);
        l.t.close();
        l.t.wants_write()
    }

    /// Hands received bytes to the layer; its failure closes the connection once its
    /// last records (an alert) are written.
    fn decode(&mut self, lp: &mut Loop, wire: &[u8]) {
        let Some(l) = self.layer.as_deref_mut() else {
            return;
        };
        let r = l.t.recv(
            wire,
            &mut Plain {
                lp,
                input: &mut self.input,
            },
        );
        match r {
            Ok(()) => {
                if l.t.peer_closed() {
                    self.st.set(EOF, true);
                }
                if self.input.len() >= self.st.opts.max_input as usize {
                    self.st.set(INPUT_FULL, true);
                }
            }
            Err(e) => {
                log::debug!("connection {:?}: transport: {e}", self.st.token);
                self.st.error = Some(e);
                self.st.set(LAYER_CLOSED | CLOSING, true);
                self.out.clear(lp);
                self.input.release(lp);
            }
        }
    }

    /// Offers buffered input to the protocol until it stops consuming.
    fn process(&mut self, lp: &mut Loop) {
        self.process_upto(lp, usize::MAX);
    }

    /// [`Conn::process`], offering about `limit` bytes: the window is cut at `limit`
    /// unless the protocol takes nothing of it (it may need more to make progress).
    /// Returns the bytes consumed.
    fn process_upto(&mut self, lp: &mut Loop, limit: usize) -> usize {
        let mut total = 0;
        let mut cap = limit;
        while self.input.len() > 0 && total < limit && !self.st.has(ABORT | CLOSING | HANDOFF) {
            let Some(buf) = self.input.buf.as_ref() else {
                break;
            };
            let w = self.input.window();
            let data = &buf[w.start..w.end.min(w.start.saturating_add(cap))];
            let mut io = Io {
                lp,
                out: &mut self.out,
                st: &mut self.st,
                layer: &mut self.layer,
            };
            let n = self.proto.on_data(&mut io, data).min(data.len());
            self.input.start += n as u32;
            total += n;
            if n > 0 {
                self.st.set(INPUT_FULL, false);
            } else if data.len() < w.len() {
                cap = usize::MAX;
            } else {
                break;
            }
        }
        if self.input.len() == 0 {
            self.input.release(lp);
        }
        total
    }

    fn read(&mut self, lp: &mut Loop) -> io::Result<()> {
        if !self.input.make_room(lp, self.st.opts.max_input as usize) {
            // Full of input the protocol has not consumed: stop reading until it does.
            self.st.set(INPUT_FULL, true);
            return Ok(());
        }
        let buf = self.input.buf.as_mut().expect("made room");
        let space = &mut buf[self.input.end as usize..];
        let want = space.len();
        lp.stats.read += 1;
        // recv, not read: on a socket it skips the VFS layer (file position checks and
        // fsnotify) that read(2) goes through first.
        // SAFETY: reads at most `want` bytes into the live slice `space`.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), space.as_mut_ptr().cast(), want, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => {
                    self.st.set(CAN_READ, false);
                    Ok(())
                }
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        let n = n as usize;
        log::trace!("read(fd {}) = {n}", self.fd.as_raw_fd());
        if n == 0 {
            self.st.set(EOF, true);
            self.st.set(CAN_READ, false);
        } else {
            self.input.end += n as u32;
            if n < want {
                // A short read drains the socket: no second read to see EAGAIN.
                self.st.set(CAN_READ, false);
                if self.st.has(PEER_CLOSED) {
                    self.st.set(EOF, true);
                }
            }
        }
        Ok(())
    }

    /// [`Conn::read`] through the transport layer: the bytes are read into a pool block
    /// of their own, and what the layer decodes is appended to the input.
    fn read_layered(&mut self, lp: &mut Loop) -> io::Result<()> {
        if self.input.len() >= self.st.opts.max_input as usize {
            self.st.set(INPUT_FULL, true);
            return Ok(());
        }
        let plain = std::mem::take(&mut self.input);
        let r = self.read(lp);
        let mut wire = std::mem::replace(&mut self.input, plain);
        if let Some(buf) = wire.buf.as_ref() {
            let w = wire.window();
            self.decode(lp, &buf[w]);
        }
        wire.release(lp);
        r
    }

    /// Through a transport layer: hands the protocol's output to the layer a window at a
    /// time, each once the layer's previous output has been written, and writes what it
    /// produces (its own records too).
    fn flush_layered(&mut self, lp: &mut Loop) -> io::Result<()> {
        loop {
            let Some(layer) = self.layer.as_deref_mut() else {
                return Ok(());
            };
            if layer.wire.len() == 0 {
                let mut budget = LAYER_WINDOW;
                while budget > 0 {
                    if self.out.front_file().is_some() && !self.st.has(LAYER_CLOSED) {
                        // The layer takes bytes: read the file's next block for it.
                        self.out.read_front_file(lp)?;
                    }
                    let plain = match self.out.chunks().map(Chunk::bytes).find(|b| !b.is_empty()) {
                        Some(b) if !self.st.has(LAYER_CLOSED) => &b[..b.len().min(budget)],
                        _ => &[],
                    };
                    let mut wire = Wire {
                        lp,
                        out: &mut layer.wire,
                    };
                    let n = layer.t.send(plain, &mut wire)?;
                    if n == 0 {
                        break;
                    }
                    self.out.consume(lp, n);
                    budget -= n;
                }
            }
            if layer.wire.len() == 0 {
                return Ok(());
            }
            // The socket takes the layer's bytes the way it takes the protocol's.
            std::mem::swap(&mut self.out, &mut layer.wire);
            let r = self.flush_plain(lp);
            if let Some(layer) = self.layer.as_deref_mut() {
                std::mem::swap(&mut self.out, &mut layer.wire);
            }
            r?;
            if !self.st.has(CAN_WRITE) || self.st.has(SENDING) {
                return Ok(());
            }
        }
    }

    /// Writes queued output (through the transport layer, if any).
    fn flush(&mut self, lp: &mut Loop) -> io::Result<()> {
        if self.layer.is_some() {
            return self.flush_layered(lp);
        }
        self.flush_plain(lp)
    }

    /// Writes queued output: one `send`, or one `sendmsg` of up to 64 pieces; on a backend
    /// that batches sends, queues that one send for the loop's next wait instead.
    fn flush_plain(&mut self, lp: &mut Loop) -> io::Result<()> {
        while self.out.len() > 0 && self.st.has(CAN_WRITE) && !self.st.has(SENDING) {
            if let Some(f) = self.out.front_file() {
                if f.records != 0 || !super::file::SENDFILE {
                    // FastCGI (or no sendfile): the next block is read into memory and
                    // sent as bytes.
                    self.out.read_front_file(lp)?;
                } else {
                    self.send_file(lp)?;
                    continue;
                }
            }
            // Uninitialised: zeroing 1 KiB of iovecs cost more than the usual one or two
            // pieces they describe.
            let mut slots = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_IOV];
            let mut n_iov = 0;
            let mut total = 0;
            // MSG_MORE when a file follows: the head and the file's first bytes leave in
            // the same segments instead of a small one for the head.
            let mut flags = libc::MSG_NOSIGNAL;
            let mut file_next = false;
            for c in self.out.chunks() {
                if let Chunk::File(_) = c {
                    // Memory up to the file goes first; the file follows by sendfile.
                    flags |= MSG_MORE;
                    file_next = true;
                    break;
                }
                let b = c.bytes();
                if b.is_empty() {
                    continue;
                }
                slots[n_iov].write(libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                });
                total += b.len();
                n_iov += 1;
                if n_iov == MAX_IOV {
                    break;
                }
            }
            // SAFETY: the first `n_iov` slots were written just above; MaybeUninit<T> has
            // T's layout.
            let iov: &mut [libc::iovec] =
                unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast(), n_iov) };
            lp.stats.write += 1;
            let fd = self.fd.as_raw_fd();
            // Before a file (MSG_MORE), even on a backend that batches sends: a queued send
            // would hold the sendfile back until its completion, a loop iteration later.
            if lp.batch_sends && !(file_next && super::file::SENDFILE) {
                // The chunks stay put until the completion: output only grows at the back,
                // and `consume`/`clear` wait for `sent`.
                lp.queue_send(self.st.token, fd, iov);
                self.st.set(SENDING, true);
                self.st.sending = total.min(u32::MAX as usize) as u32;
                return Ok(());
            }
            let r = if n_iov == 1 {
                // SAFETY: iov[0] describes a live slice owned by the output queue.
                unsafe { libc::send(fd, iov[0].iov_base, iov[0].iov_len, flags) }
            } else {
                // SAFETY: a zeroed msghdr is valid; it points at `n_iov` live iovecs.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = n_iov as _;
                // SAFETY: `msg` references iovecs describing live slices of the queue.
                unsafe { libc::sendmsg(fd, &msg, flags) }
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.write_blocked(lp);
                        return Ok(());
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let n = r as usize;
            log::trace!("send(fd {fd}, {total}) = {n}");
            self.out.consume(lp, n);
            if n < total {
                // A short write means the socket buffer is full: wait for the edge.
                self.write_blocked(lp);
            }
        }
        Ok(())
    }

    /// Sends from the file range at the front of the output with one `sendfile` (on
    /// io_uring too: the loop calls it, the socket being non-blocking).
    fn send_file(&mut self, lp: &mut Loop) -> io::Result<()> {
        self.out.drop_empty_front(lp);
        let fd = self.fd.as_raw_fd();
        let Some(Chunk::File(f)) = self.out.q.as_deref_mut().and_then(|q| q.first.as_mut()) else {
            return Ok(());
        };
        let want = f.left;
        match f.send(fd, &mut lp.stats) {
            Ok(n) => {
                log::trace!("sendfile(fd {fd}, {want}) = {n}");
                let q = self.out.q.as_deref_mut().expect("a file chunk");
                q.len -= n;
                self.out.drop_empty_front(lp);
                if (n as u64) < want.min(super::file::MAX_SEND) {
                    self.write_blocked(lp);
                }
                Ok(())
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => {
                    self.write_blocked(lp);
                    Ok(())
                }
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// A queued send completed: `res` bytes went out, or it failed with `-res`.
    fn send_done(&mut self, lp: &mut Loop, res: i32) -> io::Result<()> {
        self.st.set(SENDING, false);
        let asked = std::mem::take(&mut self.st.sending) as usize;
        if res < 0 {
            return match -res {
                libc::EAGAIN => {
                    self.write_blocked(lp);
                    Ok(())
                }
                libc::EINTR => Ok(()),
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        let n = (res as usize).min(asked);
        log::trace!("send(fd {}, {asked}) = {n}", self.fd.as_raw_fd());
        self.wire_mut().consume(lp, n);
        if n < asked {
            self.write_blocked(lp);
        }
        Ok(())
    }

    /// The socket buffer is full: wait for a write edge, registering for it the first time.
    fn write_blocked(&mut self, lp: &mut Loop) {
        self.st.set(CAN_WRITE, false);
        if !self.st.has(WRITE_WATCHED) {
            self.st.set(WRITE_WATCHED, true);
            let interest = if self.st.has(RING_RECV) {
                Interest::SOCKET | Interest::RECV
            } else {
                Interest::SOCKET
            };
            lp.reregister(self.fd.as_raw_fd(), self.st.token, interest);
        }
    }

    /// Tells the protocol about EOF once its input before it was offered.
    fn tell_eof(&mut self, lp: &mut Loop) {
        if self.st.has(EOF) && !self.st.has(EOF_TOLD) && !self.st.has(ABORT | HANDOFF) {
            self.st.set(EOF_TOLD, true);
            let (proto, mut io) = self.io_parts(lp);
            proto.on_eof(&mut io);
        }
    }

    /// With `RING_RECV`: tells the backend to receive or not, as reading is wanted or
    /// paused (input still arriving from a receive being cancelled is kept).
    fn sync_recv(&mut self, lp: &mut Loop) {
        let paused = self.st.has(PAUSED_BY_PROTO | INPUT_FULL | PAUSED_BY_OUTPUT);
        let want = !self.st.has(EOF) && (self.st.has(LINGERING) || !paused);
        if want != self.st.has(RECV_ON) {
            self.st.set(RECV_ON, want);
            lp.recv_ctl(self.fd.as_raw_fd(), self.st.token, want);
        }
    }

    fn fail(&mut self, e: io::Error) -> Next {
        log::debug!("connection {:?}: {e}", self.st.token);
        self.st.error = Some(e);
        Next::Remove
    }

    fn on_timer(&mut self, lp: &mut Loop) {
        if self.st.armed > lp.timers.ns(lp.now()) {
            // A superseded wake-up: the pending one is still ahead.
            return;
        }
        self.st.armed = 0;
        if self.st.deadline == 0 {
            return;
        }
        if self.st.deadline > lp.timers.ns(lp.now()) {
            arm(lp, &mut self.st);
            return;
        }
        self.st.deadline = 0;
        if self.st.has(CONNECTING) {
            self.st.error = Some(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            self.st.set(ABORT, true);
            return;
        }
        if self.st.has(LINGERING) {
            self.st.set(ABORT, true);
            return;
        }
        let (proto, mut io) = self.io_parts(lp);
        proto.on_timeout(&mut io);
    }

    /// Starts a lingering close: output is all written; shut down our side and read until
    /// EOF (or the linger deadline) so that unread input does not become a reset.
    fn start_linger(&mut self, lp: &mut Loop) {
        self.st.set(LINGERING, true);
        lp.stats.other += 1;
        // SAFETY: plain shutdown(2) on the fd we own.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        let total = u32::from(self.st.opts.linger_ds) * 100;
        self.st.sending = (now_ms(lp) as u32).wrapping_add(total);
        self.linger_more(lp);
        self.input.release(lp);
    }

    /// Input came (or lingering starts): wait for more up to the lingering timeout, but not
    /// past the end of the lingering time; past it, the close is due now.
    fn linger_more(&mut self, lp: &mut Loop) {
        let left = self.st.sending.wrapping_sub(now_ms(lp) as u32) as i32;
        if left <= 0 {
            self.st.set(ABORT, true);
            return;
        }
        let wait = (left as u32).min(u32::from(self.st.opts.linger_timeout_ds) * 100);
        let at = lp.now() + std::time::Duration::from_millis(wait.into());
        set_deadline(lp, &mut self.st, Some(at));
    }

    /// Reads and discards while lingering; returns true when done.
    fn linger_read(&mut self, lp: &mut Loop) -> bool {
        if self.st.has(RING_RECV) {
            // `received` discards what arrives; done at EOF.
            return self.st.has(EOF);
        }
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !self.st.has(CAN_READ) {
                return false;
            }
            lp.stats.read += 1;
            // SAFETY: reads into a live stack buffer of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len(), 0) };
            if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock) {
                return true;
            }
            if n > 0 {
                self.linger_more(lp);
            }
            if n < 0 || (n as usize) < sink.len() {
                self.st.set(CAN_READ, false);
                return self.st.has(PEER_CLOSED);
            }
        }
        false
    }

    /// An event on a connecting socket: `Some` while it is still connecting (or failed).
    fn connect_progress(&mut self, lp: &mut Loop, ready: Ready) -> Option<Next> {
        if ready.intersects(Ready::ERROR | Ready::HUP) {
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            lp.stats.other += 1;
            // SAFETY: SO_ERROR writes one c_int into `err`, whose size is in `len`.
            let r = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            let e = if r < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::from_raw_os_error(if err == 0 { libc::ECONNRESET } else { err })
            };
            return Some(self.fail(e));
        }
        if !ready.contains(Ready::WRITABLE) {
            // Kicked (a write queued) or an early read edge: still connecting.
            return Some(if self.st.has(ABORT) {
                Next::Remove
            } else {
                Next::Keep
            });
        }
        self.st.set(CONNECTING, false);
        self.st.deadline = 0;
        log::debug!("connection {:?} connected", self.st.token);
        if lp.ring_recv {
            // From now on the backend receives, as for an accepted connection: nothing was
            // read yet, so whatever the peer sent first is the receive's (a read edge that
            // came with the connect's completion is ignored, as all are with RING_RECV).
            self.st.set(RING_RECV | RECV_ON, true);
            let fd = self.fd.as_raw_fd();
            lp.reregister(fd, self.st.token, Interest::SOCKET | Interest::RECV);
            lp.recv_ctl(fd, self.st.token, true);
        }
        let (proto, mut io) = self.io_parts(lp);
        proto.on_connect(&mut io);
        None
    }

    fn drive(&mut self, lp: &mut Loop, kicked: bool) -> Next {
        let next = self.drive_io(lp, kicked);
        if self.st.has(RING_RECV) && next != Next::Remove {
            self.sync_recv(lp);
        }
        if self.st.has(HANDOFF) && next != Next::Remove {
            return Next::Replace;
        }
        next
    }

    fn drive_io(&mut self, lp: &mut Loop, kicked: bool) -> Next {
        if self.st.has(CONNECTING) {
            // Nothing can be read or written yet; an abort takes effect now, a close once
            // connected and flushed.
            return if self.st.has(ABORT) {
                Next::Remove
            } else {
                Next::Keep
            };
        }
        if self.st.has(LINGERING) {
            return if self.st.has(ABORT) || self.linger_read(lp) {
                Next::Remove
            } else {
                Next::Keep
            };
        }
        if kicked {
            let (proto, mut io) = self.io_parts(lp);
            proto.on_wake(&mut io);
            if !self.st.has(HELD) {
                // (Held input is offered below, a window at a time.)
                self.process(lp);
            }
        }
        let mut rounds = 0;
        loop {
            if self.st.has(ABORT) {
                return Next::Remove;
            }
            if self.st.has(HANDOFF) {
                // The next protocol takes over from here (see `drive`).
                return Next::Keep;
            }
            if self.pending() && self.st.has(CAN_WRITE) && !self.st.has(SENDING) {
                if let Err(e) = self.flush(lp) {
                    return self.fail(e);
                }
            }
            // Output is left and the socket is full (found by a flush just now, or by a
            // queued send's completion).
            if self.queued() > 0 && !self.st.has(CAN_WRITE) && !self.st.has(BLOCKED) {
                self.st.set(BLOCKED, true);
                self.st.set(WANT_DRAIN, true);
                let (proto, mut io) = self.io_parts(lp);
                proto.on_write_blocked(&mut io);
            }
            if self.queued() == 0 && self.st.has(WANT_DRAIN) {
                self.st.set(WANT_DRAIN, false);
                self.st.set(BLOCKED, false);
                let (proto, mut io) = self.io_parts(lp);
                proto.on_drained(&mut io);
                if self.out.len() > 0 {
                    continue;
                }
            }
            if self.st.has(SHUT_PENDING) && !self.pending() {
                if self.close_layer() {
                    // The layer's end of stream goes out before the shutdown.
                    continue;
                }
                self.st.set(SHUT_PENDING, false);
                self.st.set(SHUT_DONE, true);
                lp.stats.other += 1;
                // SAFETY: plain shutdown(2) on the fd we own.
                unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
            }
            if self.st.has(CLOSING) {
                if self.pending() {
                    return Next::Keep;
                }
                if self.close_layer() {
                    // The layer's end of stream (close_notify) goes out first.
                    continue;
                }
                // Unless the peer has finished sending, bytes may still arrive after our
                // last read (a pipelined request behind a rejected one): closing now would
                // answer them with a reset that can destroy the response in the peer's
                // receive buffer. Shut down our side and drain until its EOF (or the linger
                // deadline) instead.
                // (On the readiness path, CAN_READ: the last read filled the buffer, so more
                // may be waiting unread.)
                // A peer that closed its side (PEER_CLOSED: its FIN is here) may still have
                // sent bytes we have not read: closing with them unread sends a reset too, so
                // the drain is skipped only once its EOF was read.
                let done =
                    self.st.has(NO_LINGER) && self.input.len() == 0 && !self.st.has(CAN_READ);
                let all_read = self.st.has(EOF) || (self.st.has(PEER_CLOSED) && done);
                if !done && !all_read && !self.st.has(CONNECTING) {
                    self.start_linger(lp);
                    return if self.linger_read(lp) {
                        Next::Remove
                    } else {
                        Next::Keep
                    };
                }
                return Next::Remove;
            }
            if self.queued() >= self.st.opts.high_water as usize {
                self.st.set(PAUSED_BY_OUTPUT, true);
            } else if self.queued() <= self.st.opts.low_water as usize {
                self.st.set(PAUSED_BY_OUTPUT, false);
            }
            if self.st.has(RING_RECV) {
                // Input arrives through `received`, and is offered here a read's worth per
                // round (once reading resumes if it is paused), so that output above the
                // high mark pauses it again.
                if !self.st.has(HELD) || self.st.has(PAUSED_BY_PROTO | PAUSED_BY_OUTPUT) {
                    break;
                }
                if rounds == MAX_ROUNDS {
                    return Next::Again;
                }
                rounds += 1;
                if self.process_upto(lp, lp.pool.block_size()) == 0 || self.input.len() == 0 {
                    self.st.set(HELD, false);
                    self.tell_eof(lp);
                }
                continue;
            }
            if !self.st.has(CAN_READ)
                || self.st.has(EOF)
                || self.st.has(PAUSED_BY_PROTO)
                || self.st.has(INPUT_FULL)
                || self.st.has(PAUSED_BY_OUTPUT)
            {
                break;
            }
            if rounds == MAX_ROUNDS {
                return Next::Again;
            }
            rounds += 1;
            let r = if self.layer.is_some() {
                self.read_layered(lp)
            } else {
                self.read(lp)
            };
            if let Err(e) = r {
                return self.fail(e);
            }
            self.process(lp);
            self.tell_eof(lp);
        }
        if self.input.len() == 0 {
            self.input.release(lp);
        } else {
            // Waiting for the rest of something: hold it in a small buffer meanwhile.
            self.input.park(lp);
        }
        Next::Keep
    }
}

impl<P: Protocol> Conn<P> {
    /// Runs one dispatch of this connection with panics contained: a panic closes this
    /// connection only (see [`super::contain`]); its output is dropped.
    fn guarded(&mut self, lp: &mut Loop, f: impl FnOnce(&mut Self, &mut Loop) -> Next) -> Next {
        let token = self.st.token;
        match super::contain::contained(token, || f(self, lp)) {
            Ok(next) => next,
            Err(()) => self.panicked(),
        }
    }

    /// After a contained panic: the connection is removed at once (a reset), with the cause
    /// for `on_close`.
    fn panicked(&mut self) -> Next {
        self.st.set(ABORT, true);
        self.st.error = Some(io::Error::other("panic while handling the connection"));
        Next::Remove
    }

    fn ready_inner(&mut self, lp: &mut Loop, ready: Ready) -> Next {
        // With RING_RECV a read here could overtake input already received and not yet
        // handed over: EOF and errors come through the receive instead.
        if ready.intersects(Ready::READABLE | Ready::READ_CLOSED | Ready::HUP | Ready::ERROR)
            && !self.st.has(RING_RECV)
        {
            self.st.set(CAN_READ, true);
        }
        if ready.intersects(Ready::WRITABLE | Ready::HUP | Ready::ERROR) {
            self.st.set(CAN_WRITE, true);
        }
        if ready.intersects(Ready::READ_CLOSED | Ready::HUP) {
            self.st.set(PEER_CLOSED, true);
        }
        if ready.contains(Ready::TIMER) {
            self.on_timer(lp);
        }
        if self.st.has(CONNECTING) && !self.st.has(ABORT) {
            if let Some(next) = self.connect_progress(lp, ready) {
                return next;
            }
        }
        self.drive(lp, ready.is_empty())
    }

    fn received_inner(&mut self, lp: &mut Loop, res: i32, data: &[u8]) -> Next {
        if res < 0 {
            return self.fail(io::Error::from_raw_os_error(-res));
        }
        log::trace!("received(fd {}) = {res}", self.fd.as_raw_fd());
        if res == 0 {
            self.st.set(EOF, true);
            self.st.set(PEER_CLOSED, true);
        } else if self.st.has(LINGERING) {
            // Discarded; the peer is still sending, so the lingering goes on a while.
            self.linger_more(lp);
        } else if !self.st.has(CLOSING) {
            // (A closing connection reads no more requests: what arrives is dropped.)
            if self.layer.is_some() {
                self.decode(lp, data);
            } else {
                self.input.append(lp, data);
            }
            if self.input.len() >= self.st.opts.max_input as usize {
                self.st.set(INPUT_FULL, true);
            }
        }
        // Offered by `drive_io` a block at a time, as a read would bring it: now, or, when
        // it comes from a receive not yet cancelled, once reading resumes (else the output
        // would grow by all it brings).
        self.st.set(HELD, true);
        self.drive(lp, false)
    }
}

impl<P: Protocol> Source for Conn<P> {
    fn ready(&mut self, lp: &mut Loop, _token: Token, ready: Ready) -> Next {
        self.guarded(lp, |c, lp| c.ready_inner(lp, ready))
    }

    fn sent(&mut self, lp: &mut Loop, _token: Token, res: i32) -> Next {
        self.guarded(lp, |c, lp| {
            if let Err(e) = c.send_done(lp, res) {
                return c.fail(e);
            }
            c.drive(lp, false)
        })
    }

    fn received(&mut self, lp: &mut Loop, _token: Token, res: i32, data: &[u8]) -> Next {
        self.guarded(lp, |c, lp| c.received_inner(lp, res, data))
    }

    fn close(&mut self, lp: &mut Loop, token: Token) {
        self.input.release(lp);
        if self.st.has(SENDING) {
            // The kernel reads these buffers until the send completes.
            let wire = std::mem::take(self.wire_mut());
            lp.abandon_send(token, wire);
        }
        self.out.clear(lp);
        if let Some(l) = self.layer.as_deref_mut() {
            l.wire.clear(lp);
        }
        if self.st.has(HANDOFF) {
            // Closed before the hand-off took place: the next protocol is dropped unused.
            lp.handoffs.retain(|h| h.0 != token);
        }
        let err = self.st.error.take();
        let proto = &mut self.proto;
        // (A panic in `on_close` is logged; the connection is going anyway.)
        let _ = super::contain::contained(token, || proto.on_close(lp, token, err.as_ref()));
        lp.stats.other += 1; // the close(2) when `fd` drops with this source
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn is_connection(&self) -> bool {
        true
    }

    fn take_over(self: Box<Self>, lp: &mut Loop, token: Token) -> Box<dyn Source> {
        let Some(i) = lp.handoffs.iter().position(|h| h.0 == token) else {
            return self;
        };
        let Ok(make) = lp.handoffs.swap_remove(i).1.downcast::<HandOff>() else {
            return self;
        };
        let Conn {
            fd,
            input,
            out,
            mut st,
            layer,
            proto,
        } = *self;
        drop(proto);
        st.set(HANDOFF, false);
        // The old protocol's deadline is not the new one's (a wake-up still armed finds
        // no deadline and is ignored).
        st.deadline = 0;
        log::debug!("connection {token:?} handed to another protocol");
        make(Parts {
            fd,
            input,
            out,
            st,
            layer,
        })
    }
}

impl Loop {
    /// Adds an accepted (or otherwise connected) socket driven by `proto`, with default
    /// options. The socket is registered once, now; no interest change follows until close.
    pub fn add_conn<P: Protocol>(&mut self, conn: Accepted, proto: P) -> Token {
        self.add_conn_with(conn, proto, ConnOptions::default())
    }

    /// [`Loop::add_conn`] with explicit options.
    pub fn add_conn_with<P: Protocol>(
        &mut self,
        conn: Accepted,
        proto: P,
        opts: ConnOptions,
    ) -> Token {
        self.add_conn_flags(conn, proto, opts, CAN_WRITE)
    }

    /// Adds a socket whose connect(2) is in progress; see [`Loop::connect`].
    pub(crate) fn add_connecting<P: Protocol>(
        &mut self,
        conn: Accepted,
        proto: P,
        opts: ConnOptions,
        timeout: Option<std::time::Duration>,
    ) -> Token {
        let token = self.add_conn_flags(conn, proto, opts, CONNECTING);
        if let Some(t) = timeout {
            let at = self.now() + t;
            self.with_source::<Conn<P>, ()>(token, |c, lp, _| {
                set_deadline(lp, &mut c.st, Some(at));
                ((), Next::Keep)
            });
        }
        token
    }

    fn add_conn_flags<P: Protocol>(
        &mut self,
        conn: Accepted,
        proto: P,
        opts: ConnOptions,
        flags: u32,
    ) -> Token {
        let fd = conn.fd.as_raw_fd();
        // A connect in progress reports its completion as writability.
        let (interest, flags) = if flags & CONNECTING != 0 {
            (Interest::SOCKET, flags | WRITE_WATCHED)
        } else if self.ring_recv {
            // The backend receives from the start; see `RING_RECV`.
            (
                Interest::SOCKET_READ | Interest::RECV,
                flags | RING_RECV | RECV_ON,
            )
        } else {
            (Interest::SOCKET_READ, flags)
        };
        self.add_source(Some((fd, interest)), |token| {
            Box::new(Conn {
                fd: conn.fd,
                input: In::default(),
                out: Out::default(),
                st: State {
                    token,
                    peer: conn.peer,
                    opts: opts.into(),
                    flags,
                    sending: 0,
                    deadline: 0,
                    armed: 0,
                    error: None,
                },
                layer: None,
                proto,
            })
        })
    }

    /// Runs `f` with connection `token`'s protocol and I/O, then writes what it queued (the
    /// way asynchronous work completes a response). Returns `None` if the token is stale,
    /// not a `Conn<P>`, or the connection is running a callback right now.
    pub fn with_conn<P: Protocol, R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut P, &mut Io<'_>) -> R,
    ) -> Option<R> {
        let r = self.with_source::<Conn<P>, Option<R>>(token, |c, lp, _| {
            let mut r = None;
            let next = c.guarded(lp, |c, lp| {
                let (proto, mut io) = c.io_parts(lp);
                r = Some(f(proto, &mut io));
                c.drive(lp, true)
            });
            (r, next)
        });
        r.flatten()
    }

    /// Runs `f` with connection `token`'s protocol and I/O without running any of its
    /// callbacks now: what `f` queued or changed takes effect when the connection is called
    /// at the end of this iteration (no re-entrancy; one write however many calls). Returns
    /// `None` if the token is stale, not a `Conn<P>`, or the connection is running a
    /// callback right now.
    pub fn with_conn_later<P: Protocol, R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut P, &mut Io<'_>) -> R,
    ) -> Option<R> {
        let r = self.with_source::<Conn<P>, Option<R>>(token, |c, lp, _| {
            let mut r = None;
            let next = c.guarded(lp, |c, lp| {
                let (proto, mut io) = c.io_parts(lp);
                r = Some(f(proto, &mut io));
                Next::Keep
            });
            (r, next)
        })??;
        self.kick_soon(token);
        Some(r)
    }

    /// Runs `f` with connection `token`'s protocol, read-only (no callback, no I/O). `None`
    /// if the token is stale, not a `Conn<P>`, or inside a callback right now.
    pub(crate) fn peek_conn<P: Protocol, R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&P) -> R,
    ) -> Option<R> {
        self.with_source::<Conn<P>, R>(token, |c, _, _| (f(&c.proto), Next::Keep))
    }

    /// Asks connection `token` to offer its buffered input to its protocol again in the next
    /// iteration (after the protocol became able to consume more).
    pub fn kick(&mut self, token: Token) {
        self.push_again(token);
    }

    /// Closes connection `token` now. Returns false for a stale token.
    pub fn close_conn(&mut self, token: Token) -> bool {
        self.remove_source(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl Protocol for Nop {
        fn on_data(&mut self, _: &mut Io<'_>, input: &[u8]) -> usize {
            input.len()
        }
    }

    #[test]
    fn connection_state_stays_small() {
        // Idle footprint: the output queue is boxed (8 bytes), the deadline is a u64 and
        // the transport layer a pointer (8 bytes, null for a plain socket), so a
        // connection with an empty protocol fits 136 bytes (192 with HTTP's).
        let size = std::mem::size_of::<Conn<Nop>>();
        assert!(size <= 136, "Conn is {size} bytes");
    }
}
