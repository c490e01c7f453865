//! The io_uring backend (Linux 5.11 or later): readiness comes from multishot poll requests
//! and connection output goes out as send requests, all submitted by the one
//! `io_uring_enter` that also waits. An iteration that finds completions already posted
//! and has nothing to submit makes no syscall at all.
//!
//! On Linux 6.12 or later connections' input comes through the ring as well: one
//! multishot receive per connection, armed once, takes what arrives from a ring of
//! provided buffers shared by every connection (32 of 64 KiB, consumed incrementally: a
//! small request takes only its own bytes of one, so thousands fit), and the loop copies it
//! into the connection's input at once; a buffer goes back to the kernel when its last
//! piece is copied. A keep-alive request then costs no syscall of its own. An idle
//! connection holds no buffer, as before; a paused one has its receive cancelled.
//! `MYRIAD_URING_RECV=0` turns this off (readiness polls and `recv` calls, as on older
//! kernels).
//!
//! Listeners accept through the ring too (Linux 5.19 or later): one multishot accept per
//! listener hands over each new connection's fd, with no `accept4` call and no poll.
//! `MYRIAD_URING_ACCEPT=0` turns this off.
//!
//! Sends carry `MSG_DONTWAIT`, so the kernel issues each one inline while it consumes the
//! submission queue and fails it with `EAGAIN` rather than parking it: when the enter that
//! submitted a send returns, its completion is posted and its buffers are free again. The
//! connection still keeps them until the completion arrives (see `net::conn`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::epoll::{epoll_bits, ready_of};
use super::{close_accepted, Backend, Change, Event, Interest, Op, Ready};
use crate::reactor::Stats;

// The kernel ABI, from include/uapi/linux/io_uring.h.

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// A submission queue entry (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    /// poll32_events, msg_flags...
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

/// A completion queue entry (16 bytes).
#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

const SETUP_CQSIZE: u32 = 1 << 3;
const SETUP_SUBMIT_ALL: u32 = 1 << 7;
const SETUP_COOP_TASKRUN: u32 = 1 << 8;
const FEAT_SINGLE_MMAP: u32 = 1;
const FEAT_NODROP: u32 = 1 << 1;
const FEAT_EXT_ARG: u32 = 1 << 8;
const OFF_SQ_RING: libc::off_t = 0;
const OFF_SQES: libc::off_t = 0x1000_0000;
const ENTER_GETEVENTS: u32 = 1;
const ENTER_EXT_ARG: u32 = 1 << 3;
const SQ_CQ_OVERFLOW: u32 = 1 << 1;
const OP_POLL_ADD: u8 = 6;
const OP_POLL_REMOVE: u8 = 7;
const OP_SENDMSG: u8 = 9;
const OP_SEND: u8 = 26;
const OP_ASYNC_CANCEL: u8 = 14;
const OP_RECV: u8 = 27;
const OP_ACCEPT: u8 = 13;
const ACCEPT_MULTISHOT: u16 = 1;
const POLL_ADD_MULTI: u32 = 1;
const CQE_F_BUFFER: u32 = 1;
const CQE_F_MORE: u32 = 1 << 1;
const CQE_BUFFER_SHIFT: u32 = 16;
const CQE_F_BUF_MORE: u32 = 1 << 4;
const PBUF_RING_INC: u16 = 2;
const SQE_BUFFER_SELECT: u8 = 1 << 5;
const RECV_MULTISHOT: u16 = 1 << 1;
const REGISTER_PBUF_RING: libc::c_long = 22;

/// The buffer group connections receive into.
const RECV_GROUP: u16 = 0;
/// Provided receive buffers (a power of two) and their size: 2 MiB, consumed incrementally
/// (each receive takes its bytes from the front of the current buffer). When a burst takes
/// them all, the receives that find none end (`ENOBUFS`) and are armed again at the next
/// wait, once the loop has given the buffers back.
const RECV_BUFS: u32 = 32;
const RECV_BUF_SIZE: u32 = 64 * 1024;
/// In an event's `buf`: the piece is the buffer's last (the kernel is done with it).
const BUF_LAST: u32 = 1 << 31;
/// The environment variable that turns receiving through the ring off ("0").
const RECV_ENV: &str = "MYRIAD_URING_RECV";
/// The environment variable that turns accepting through the ring off ("0").
const ACCEPT_ENV: &str = "MYRIAD_URING_ACCEPT";

/// Completions handled per wait.
const MAX_EVENTS: u32 = 1024;

/// Send arena entries kept across iterations.
const ARENA_KEEP: usize = 256;

/// Submission queue size; the completion queue is four times larger.
const SQ_ENTRIES: u32 = 2048;

/// `user_data` of requests the loop never hears about: bit 31 of the low word is set and the
/// high word is zero, which no token has (slot indexes stay below 2^31; the loop's own
/// tokens have all high bits set).
const TAG_INTERNAL: u64 = 0x8000_0000;
/// Completions to ignore (poll removals).
const TAG_IGNORE: u64 = TAG_INTERNAL | 0x4000_0000;
/// A send; the low bits index `Uring::inflight`.
const TAG_SEND: u64 = TAG_INTERNAL;
/// A connection's receive: its token with bit 30 set (slots stay below 2^29; the loop's
/// fixed tokens, whose slots are near `u32::MAX`, never receive).
const TAG_RECV: u64 = 0x4000_0000;
/// A listener's accept: its token with bit 29 set.
const TAG_ACCEPT: u64 = 0x2000_0000;

fn is_internal(user_data: u64) -> bool {
    user_data >> 32 == 0 && user_data & TAG_INTERNAL != 0
}

/// The `user_data` of `token`'s receive or accept (by its registration's interest).
fn op_data(token: u64, interest: Interest) -> u64 {
    token
        | if interest.contains(Interest::ACCEPT) {
            TAG_ACCEPT
        } else {
            TAG_RECV
        }
}

/// The token of a receive's or an accept's completion, if `user_data` is one, and whether
/// it is an accept.
fn op_token(user_data: u64) -> Option<(u64, bool)> {
    let low = user_data as u32;
    if is_internal(user_data) || low >= u32::MAX - 1 {
        return None;
    }
    if u64::from(low) & TAG_RECV != 0 {
        Some((user_data & !TAG_RECV, false))
    } else if u64::from(low) & TAG_ACCEPT != 0 {
        Some((user_data & !TAG_ACCEPT, true))
    } else {
        None
    }
}

/// A receive's or an accept's completion for `token`, registered as `reg`: if the request
/// `ended`, notes that, and queues it to be armed again if it is still wanted and ended by
/// cancellation, a full completion ring (with a result), or, for a receive, for want of
/// buffers. EOF and errors end it for good (a listener's owner decides when to go on).
fn op_ended(regs: &mut Regs, rearm: &mut Vec<u64>, token: u64, reg: Reg, res: i32, ended: bool) {
    if !ended {
        return;
    }
    regs.entry(token).recv &= !R_ARMED;
    let again = if reg.interest.contains(Interest::ACCEPT) {
        res >= 0 || res == -libc::ECANCELED
    } else {
        res > 0 || res == -libc::ENOBUFS || res == -libc::ECANCELED
    };
    if again && reg.recv & R_WANT != 0 {
        rearm.push(token);
    }
}

/// What a registration's poll waits for, if it has one. Input comes from a receive (EOF
/// and errors too): its poll is only for writability, and there is none until a write
/// comes up short. A listener that accepts through the ring has none.
fn polled(interest: Interest) -> Option<Interest> {
    if interest.contains(Interest::ACCEPT) {
        None
    } else if interest.contains(Interest::RECV) {
        (interest.contains(Interest::WRITE)).then(|| interest.without(Interest::READ))
    } else {
        Some(interest)
    }
}

/// Whether the running kernel is `major.minor` or later (false if uname fails).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a live, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    let release: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let text = String::from_utf8_lossy(&release);
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// A shared memory mapping of the ring, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    /// Maps `len` bytes of the ring fd at `off` (shared, populated).
    fn new(fd: RawFd, len: usize, off: libc::off_t) -> io::Result<Map> {
        Map::mmap(len, libc::MAP_SHARED | libc::MAP_POPULATE, fd, off)
    }

    /// A private anonymous mapping of `len` bytes (page-aligned, zero-filled on first touch).
    fn anon(len: usize) -> io::Result<Map> {
        Map::mmap(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    }

    fn mmap(len: usize, flags: libc::c_int, fd: RawFd, off: libc::off_t) -> io::Result<Map> {
        // SAFETY: maps `len` fresh bytes: anonymous, or of the ring fd at one of the offsets
        // the kernel defines for it; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }

    /// A pointer `off` bytes into the mapping.
    fn at<T>(&self, off: u32) -> *mut T {
        debug_assert!(off as usize + std::mem::size_of::<T>() <= self.len);
        // SAFETY: `off` comes from the kernel's offsets for this mapping, inside `len`.
        unsafe { self.ptr.add(off as usize).cast() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; nothing points into it after
        // the ring (its only user) is gone.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One entry of a provided-buffer ring (`struct io_uring_buf`). The first entry's `resv`
/// is the ring's tail, which only we write.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// `struct io_uring_buf_reg`.
#[repr(C)]
struct BufReg {
    ring_addr: u64,
    ring_entries: u32,
    bgid: u16,
    flags: u16,
    resv: [u64; 3],
}

/// The provided buffers connections receive into, and the ring that hands them to the
/// kernel. The pieces of a buffer are ours from their completions; once its last piece is
/// in, the whole buffer is ours until [`RecvBufs::put`].
struct RecvBufs {
    entries: Map,
    data: Map,
    /// Our copy of the ring's tail (we are its only writer).
    tail: u16,
    /// Per buffer: where its next piece starts (the kernel consumes each from the front,
    /// in completion order, and does not say).
    next: Vec<u32>,
}

impl RecvBufs {
    /// Maps the buffers, fills the ring and registers it with `ring_fd` as `RECV_GROUP`.
    fn new(ring_fd: RawFd) -> io::Result<RecvBufs> {
        let mut b = RecvBufs {
            entries: Map::anon(RECV_BUFS as usize * std::mem::size_of::<BufEntry>())?,
            data: Map::anon(RECV_BUFS as usize * RECV_BUF_SIZE as usize)?,
            tail: 0,
            next: vec![0; RECV_BUFS as usize],
        };
        for bid in 0..RECV_BUFS {
            b.put(bid);
        }
        let reg = BufReg {
            ring_addr: b.entries.ptr as u64,
            ring_entries: RECV_BUFS,
            bgid: RECV_GROUP,
            flags: PBUF_RING_INC,
            resv: [0; 3],
        };
        // SAFETY: registers the page-aligned mapping `entries` (RECV_BUFS entries, a power
        // of two) as a provided-buffer ring, consumed incrementally (6.12); the kernel reads
        // `reg` during the call only.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring_fd,
                REGISTER_PBUF_RING,
                &reg as *const BufReg,
                1,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(b)
    }

    /// The start of buffer `bid`.
    fn at(&self, bid: u32) -> *const u8 {
        let off = (bid % RECV_BUFS) as usize * RECV_BUF_SIZE as usize;
        // SAFETY: `off` is the start of one of the RECV_BUFS buffers inside `data`.
        unsafe { self.data.ptr.add(off) }
    }

    /// Takes note of a completion's piece of buffer `bid` (`len` bytes, the buffer's last
    /// if `last`); returns where it starts.
    fn piece(&mut self, bid: u32, len: u32, last: bool) -> u32 {
        let next = &mut self.next[(bid % RECV_BUFS) as usize];
        let off = *next;
        *next = if last { 0 } else { off + len };
        off.min(RECV_BUF_SIZE - len.min(RECV_BUF_SIZE))
    }

    /// Hands buffer `bid` (back) to the kernel, whole.
    fn put(&mut self, bid: u32) {
        let bid = bid % RECV_BUFS;
        let slot = u32::from(self.tail) & (RECV_BUFS - 1);
        let e: *mut BufEntry = self
            .entries
            .at(slot * std::mem::size_of::<BufEntry>() as u32);
        // SAFETY: `e` is an entry inside the ring mapping that the kernel does not read
        // until the tail store below publishes it; `resv` (the tail, in entry 0) is left
        // alone.
        unsafe {
            std::ptr::addr_of_mut!((*e).addr).write(self.at(bid) as u64);
            std::ptr::addr_of_mut!((*e).len).write(RECV_BUF_SIZE);
            std::ptr::addr_of_mut!((*e).bid).write(bid as u16);
        }
        self.tail = self.tail.wrapping_add(1);
        let tail: *const std::sync::atomic::AtomicU16 =
            self.entries.at(std::mem::offset_of!(BufEntry, resv) as u32);
        // SAFETY: the tail field of entry 0, inside the mapping; Release publishes the entry.
        unsafe { (*tail).store(self.tail, Ordering::Release) };
    }
}

/// The rings and the cursors into them.
struct Ring {
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_flags: *const AtomicU32,
    sq_mask: u32,
    sq_entries: u32,
    sqes: *mut Sqe,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cqes: *const Cqe,
    /// Our copy of the submission tail (we are its only writer).
    tail: u32,
    /// Entries pushed but not yet consumed by an enter.
    unsubmitted: u32,
    // Field order matters for drop: the mappings go before the fd.
    _sqe_map: Map,
    _sq_map: Map,
    fd: OwnedFd,
}

impl Ring {
    fn new() -> io::Result<Ring> {
        // Cooperative task work (5.19): completions are run at our next syscall instead of
        // by an interrupt to this CPU while it runs (measured: 13% of the loop's samples
        // went to returning from those interrupts). A sleeping loop is still woken.
        let mut p = Params::default();
        let mut raw = -1;
        for flags in [SETUP_COOP_TASKRUN, 0] {
            p = Params {
                flags: SETUP_CQSIZE | SETUP_SUBMIT_ALL | flags,
                cq_entries: SQ_ENTRIES * 4,
                ..Default::default()
            };
            // SAFETY: io_uring_setup reads and writes the one `Params` struct we pass.
            raw = unsafe {
                libc::syscall(libc::SYS_io_uring_setup, SQ_ENTRIES, &mut p as *mut Params)
            };
            if raw >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                break;
            }
        }
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: io_uring_setup returned a fresh fd (close-on-exec) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        let need = FEAT_SINGLE_MMAP | FEAT_NODROP | FEAT_EXT_ARG;
        if p.features & need != need {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks single mmap, no-drop or extended wait arguments (Linux < 5.11)",
            ));
        }
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>();
        let sq_map = Map::new(fd.as_raw_fd(), sq_len.max(cq_len), OFF_SQ_RING)?;
        // Single mmap: the completion ring shares the submission ring's mapping.
        let sqe_map = Map::new(
            fd.as_raw_fd(),
            p.sq_entries as usize * std::mem::size_of::<Sqe>(),
            OFF_SQES,
        )?;
        let ring = Ring {
            sq_head: sq_map.at(p.sq_off.head),
            sq_tail: sq_map.at(p.sq_off.tail),
            sq_flags: sq_map.at(p.sq_off.flags),
            // SAFETY: the kernel initialised these fields of the mapped ring.
            sq_mask: unsafe { *sq_map.at::<u32>(p.sq_off.ring_mask) },
            sq_entries: p.sq_entries,
            sqes: sqe_map.ptr.cast(),
            cq_head: sq_map.at(p.cq_off.head),
            cq_tail: sq_map.at(p.cq_off.tail),
            // SAFETY: as above.
            cq_mask: unsafe { *sq_map.at::<u32>(p.cq_off.ring_mask) },
            cqes: sq_map.at(p.cq_off.cqes),
            // SAFETY: as above; nothing has been submitted yet.
            tail: unsafe { (*sq_map.at::<AtomicU32>(p.sq_off.tail)).load(Ordering::Relaxed) },
            unsubmitted: 0,
            _sqe_map: sqe_map,
            _sq_map: sq_map,
            fd,
        };
        // The index array maps ring slot i to SQE i, once and for all.
        let array: *mut u32 = ring._sq_map.at(p.sq_off.array);
        for i in 0..p.sq_entries {
            // SAFETY: `array` has `sq_entries` u32 slots inside the mapping.
            unsafe { *array.add(i as usize) = i };
        }
        Ok(ring)
    }

    fn sq_head(&self) -> u32 {
        // SAFETY: points into the live mapping; the kernel updates it atomically.
        unsafe { (*self.sq_head).load(Ordering::Acquire) }
    }

    /// Appends `sqe`, submitting what is queued first if the queue is full.
    fn push(&mut self, sqe: Sqe, stats: &mut Stats) -> io::Result<()> {
        if self.tail.wrapping_sub(self.sq_head()) == self.sq_entries {
            stats.other += 1;
            self.submit()?;
        }
        // SAFETY: the slot `tail & mask` is free (checked above) and inside the SQE array.
        unsafe { *self.sqes.add((self.tail & self.sq_mask) as usize) = sqe };
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: points into the live mapping; Release publishes the SQE written above.
        unsafe { (*self.sq_tail).store(self.tail, Ordering::Release) };
        self.unsubmitted += 1;
        Ok(())
    }

    /// Whether completions are waiting to be reaped (or stuck in the kernel's overflow list,
    /// which only an enter flushes).
    fn has_completions(&self) -> (bool, bool) {
        // SAFETY: both point into the live mapping.
        let (head, tail, flags) = unsafe {
            (
                (*self.cq_head).load(Ordering::Relaxed),
                (*self.cq_tail).load(Ordering::Acquire),
                (*self.sq_flags).load(Ordering::Relaxed),
            )
        };
        (head != tail, flags & SQ_CQ_OVERFLOW != 0)
    }

    /// Submits everything queued without reaping or waiting.
    fn submit(&mut self) -> io::Result<()> {
        self.enter(0, 0, std::ptr::null())
    }

    /// Submits everything queued, flushes completions the kernel holds back, and waits for
    /// `wait_nr` completions or `timeout` (None: no limit).
    fn submit_and_wait(&mut self, wait_nr: u32, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let arg = GeteventsArg {
            sigmask: 0,
            sigmask_sz: 8,
            min_wait_usec: 0,
            ts: ts.as_ref().map_or(0, |t| t as *const libc::timespec as u64),
        };
        // `arg` and the timespec it points at live until `enter` returns.
        self.enter(wait_nr, ENTER_GETEVENTS | ENTER_EXT_ARG, &arg)
    }

    fn enter(&mut self, wait_nr: u32, flags: u32, arg: *const GeteventsArg) -> io::Result<()> {
        // SAFETY: io_uring_enter on our ring; `arg` is null (no flag reads it) or points at
        // a live GeteventsArg whose size is passed as the last argument.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd.as_raw_fd(),
                self.unsubmitted,
                wait_nr,
                flags,
                arg,
                std::mem::size_of::<GeteventsArg>(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Timed out, interrupted, or completions backed up: the caller reaps.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            };
        }
        self.unsubmitted -= (r as u32).min(self.unsubmitted);
        Ok(())
    }

    /// Calls `f` on up to `max` posted completions and frees their slots.
    fn reap(&mut self, max: u32, mut f: impl FnMut(u64, i32, u32)) {
        // SAFETY: points into the live mapping; we are the only writer of the head.
        let mut head = unsafe { (*self.cq_head).load(Ordering::Relaxed) };
        // SAFETY: as above; Acquire pairs with the kernel's release of the tail.
        let tail = unsafe { (*self.cq_tail).load(Ordering::Acquire) };
        let tail = head.wrapping_add(tail.wrapping_sub(head).min(max));
        while head != tail {
            // SAFETY: entries between head and tail are posted and inside the CQE array.
            let cqe = unsafe { &*self.cqes.add((head & self.cq_mask) as usize) };
            f(cqe.user_data, cqe.res, cqe.flags);
            head = head.wrapping_add(1);
        }
        // SAFETY: as above; Release hands the slots back to the kernel.
        unsafe { (*self.cq_head).store(head, Ordering::Release) };
    }
}

/// A registered fd: what to re-arm its poll with.
#[derive(Clone, Copy)]
struct Reg {
    /// The token's generation (its high half).
    gen: u32,
    /// -1: no registration.
    fd: RawFd,
    interest: Interest,
    /// The receive's or the accept's state ([`Interest::RECV`], [`Interest::ACCEPT`]):
    /// `R_WANT`, `R_ARMED`.
    recv: u8,
}

/// The connection wants to receive (the listener to accept).
const R_WANT: u8 = 1;
/// A receive (an accept) is in the kernel (armed, or cancelled and not yet ended).
const R_ARMED: u8 = 2;

const NO_REG: Reg = Reg {
    gen: 0,
    fd: -1,
    interest: Interest::READ,
    recv: 0,
};

/// Registrations by token: a vector indexed by the token's slot (slots are dense, so this
/// costs 12 bytes per source), plus the loop's two fixed tokens.
struct Regs {
    by_slot: Vec<Reg>,
    fixed: [Reg; 2],
}

impl Regs {
    fn new() -> Regs {
        Regs {
            by_slot: Vec::new(),
            fixed: [NO_REG; 2],
        }
    }

    fn entry(&mut self, token: u64) -> &mut Reg {
        let slot = token as u32;
        if slot >= u32::MAX - 1 {
            return &mut self.fixed[(u32::MAX - slot) as usize];
        }
        let i = slot as usize;
        if i >= self.by_slot.len() {
            self.by_slot.resize(i + 1, NO_REG);
        }
        &mut self.by_slot[i]
    }

    fn get(&self, token: u64) -> Option<Reg> {
        let slot = token as u32;
        let r = if slot >= u32::MAX - 1 {
            self.fixed[(u32::MAX - slot) as usize]
        } else {
            *self.by_slot.get(slot as usize)?
        };
        (r.fd >= 0 && r.gen == (token >> 32) as u32).then_some(r)
    }

    /// Registers `token`, keeping the receive state of a registration it replaces.
    fn insert(&mut self, token: u64, fd: RawFd, interest: Interest) -> Reg {
        let recv = self.get(token).map_or(0, |r| r.recv);
        let reg = Reg {
            gen: (token >> 32) as u32,
            fd,
            interest,
            recv,
        };
        *self.entry(token) = reg;
        reg
    }

    /// Forgets `token`; returns what it was registered as.
    fn remove(&mut self, token: u64) -> Option<Reg> {
        let reg = self.get(token)?;
        *self.entry(token) = NO_REG;
        Some(reg)
    }
}

/// A send waiting for the next enter: its iovecs are `iov[start..start + n]`.
struct Queued {
    token: u64,
    fd: RawFd,
    start: u32,
    n: u32,
}

/// The io_uring backend.
pub(crate) struct Uring {
    ring: Ring,
    regs: Regs,
    /// Level-triggered (one-shot) polls that fired and are re-armed at the next wait.
    rearm: Vec<u64>,
    queued: Vec<Queued>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::msghdr>,
    /// Tokens of submitted sends, indexed by the low bits of their `user_data`.
    inflight: Vec<u64>,
    inflight_free: Vec<u32>,
    /// Provided buffers, when connections receive through the ring.
    bufs: Option<RecvBufs>,
    /// Tokens whose receive or accept ended while still wanted: armed again at the next
    /// wait.
    op_rearm: Vec<u64>,
    /// Receives and accepts in the kernel (armed or being cancelled), for the teardown.
    ops_armed: u32,
    /// Listeners accept through the ring.
    accepts: bool,
}

impl Uring {
    /// Sets up a ring; fails with `Unsupported` on kernels without the features used.
    pub(crate) fn new() -> io::Result<Uring> {
        let ring = Ring::new()?;
        // Multishot receives came in 6.0, incrementally consumed buffers in 6.12: without
        // them a burst from thousands of connections would need a buffer each.
        let bufs = if std::env::var(RECV_ENV).is_ok_and(|v| v == "0") || !kernel_at_least(6, 12) {
            None
        } else {
            RecvBufs::new(ring.fd.as_raw_fd())
                .inspect_err(|e| log::debug!("io_uring: no provided buffers ({e}), polling"))
                .ok()
        };
        // Multishot accepts came in 5.19.
        let accepts = !std::env::var(ACCEPT_ENV).is_ok_and(|v| v == "0") && kernel_at_least(5, 19);
        Ok(Uring {
            ring,
            regs: Regs::new(),
            rearm: Vec::new(),
            queued: Vec::new(),
            iov: Vec::new(),
            msgs: Vec::new(),
            inflight: Vec::new(),
            inflight_free: Vec::new(),
            bufs,
            op_rearm: Vec::new(),
            ops_armed: 0,
            accepts,
        })
    }

    /// Arms `token`'s multishot receive into the provided buffers, or its multishot accept
    /// (new fds non-blocking and close-on-exec, as accept4 makes them; no peer address,
    /// which each completion would overwrite).
    fn recv_arm(&mut self, token: u64, reg: Reg, stats: &mut Stats) -> io::Result<()> {
        self.regs.entry(token).recv |= R_ARMED;
        self.ops_armed += 1;
        let user_data = op_data(token, reg.interest);
        let sqe = if reg.interest.contains(Interest::ACCEPT) {
            Sqe {
                opcode: OP_ACCEPT,
                ioprio: ACCEPT_MULTISHOT,
                fd: reg.fd,
                op_flags: (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32,
                user_data,
                ..Default::default()
            }
        } else {
            Sqe {
                opcode: OP_RECV,
                flags: SQE_BUFFER_SELECT,
                ioprio: RECV_MULTISHOT,
                fd: reg.fd,
                buf_index: RECV_GROUP,
                user_data,
                ..Default::default()
            }
        };
        self.ring.push(sqe, stats)
    }

    /// Asks the kernel to end `token`'s receive or accept (it completes with `ECANCELED`).
    fn recv_cancel(&mut self, token: u64, reg: Reg, stats: &mut Stats) -> io::Result<()> {
        self.ring.push(
            Sqe {
                opcode: OP_ASYNC_CANCEL,
                fd: -1,
                addr: op_data(token, reg.interest),
                user_data: TAG_IGNORE,
                ..Default::default()
            },
            stats,
        )
    }

    /// Starts or stops `token`'s receive. Stopping cancels the one in the kernel; starting
    /// while a cancellation is under way leaves the re-arming to its completion.
    fn recv_set(&mut self, token: u64, on: bool, stats: &mut Stats) -> io::Result<()> {
        let Some(reg) = self.regs.get(token) else {
            return Ok(());
        };
        let e = self.regs.entry(token);
        if on {
            e.recv |= R_WANT;
        } else {
            e.recv &= !R_WANT;
        }
        let (armed, wanted) = (reg.recv & R_ARMED != 0, reg.recv & R_WANT != 0);
        if on && !armed {
            self.recv_arm(token, reg, stats)?;
        } else if !on && armed && wanted {
            self.recv_cancel(token, reg, stats)?;
        }
        Ok(())
    }

    fn poll_add(&mut self, token: u64, reg: Reg, stats: &mut Stats) -> io::Result<()> {
        // Multishot polls are edge-triggered (io_uring's default); level-triggered ones are
        // one-shot and re-armed after each report, which reports once per wait while ready,
        // as epoll does.
        let Some(interest) = polled(reg.interest) else {
            return Ok(());
        };
        let edge = interest.contains(Interest::EDGE);
        let mask = epoll_bits(interest) & !(libc::EPOLLET as u32);
        self.ring.push(
            Sqe {
                opcode: OP_POLL_ADD,
                fd: reg.fd,
                op_flags: mask,
                len: if edge { POLL_ADD_MULTI } else { 0 },
                user_data: token,
                ..Default::default()
            },
            stats,
        )
    }

    fn poll_remove(&mut self, token: u64, stats: &mut Stats) -> io::Result<()> {
        self.ring.push(
            Sqe {
                opcode: OP_POLL_REMOVE,
                fd: -1,
                addr: token,
                user_data: TAG_IGNORE,
                ..Default::default()
            },
            stats,
        )
    }

    fn apply(&mut self, c: &Change, stats: &mut Stats) -> io::Result<()> {
        match c.op {
            Op::Add(interest) => {
                let reg = self.regs.insert(c.token, c.fd, interest);
                if interest.contains(Interest::RECV) || interest.contains(Interest::ACCEPT) {
                    self.recv_set(c.token, true, stats)?;
                }
                self.poll_add(c.token, reg, stats)
            }
            Op::Modify(interest) => {
                let reg = self.regs.insert(c.token, c.fd, interest);
                // The old poll completes with ECANCELED, which is ignored.
                self.poll_remove(c.token, stats)?;
                self.poll_add(c.token, reg, stats)
            }
            Op::Delete => self.unregister(c.token, stats).map(drop),
            Op::Recv(on) => self.recv_set(c.token, on, stats),
        }
    }

    /// Forgets `token`'s registration and queues the removal of its poll; false if it had
    /// none.
    fn unregister(&mut self, token: u64, stats: &mut Stats) -> io::Result<bool> {
        // Like a poll, a receive or an accept holds the file open until it ends: cancelled.
        // Its completion finds the token gone (and its buffer goes back in order, its fd
        // is closed).
        self.recv_set(token, false, stats)?;
        let Some(reg) = self.regs.remove(token) else {
            return Ok(false);
        };
        if !self.rearm.is_empty() {
            self.rearm.retain(|t| *t != token);
        }
        if !self.op_rearm.is_empty() {
            self.op_rearm.retain(|t| *t != token);
        }
        if polled(reg.interest).is_some() {
            self.poll_remove(token, stats)?;
        }
        Ok(true)
    }

    /// After an enter: makes sure everything was submitted (the kernel takes less only
    /// under memory pressure) before the sends' headers are reused.
    fn submitted(&mut self, sends: bool, stats: &mut Stats) -> io::Result<()> {
        if self.ring.unsubmitted > 0 {
            stats.other += 1;
            self.ring.submit()?;
            if self.ring.unsubmitted > 0 {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
        }
        if sends {
            self.queued.clear();
            self.iov.clear();
            self.msgs.clear();
            // A burst (thousands of connections answered in one iteration) leaves large
            // arenas behind: give most of them back.
            if self.queued.capacity() > ARENA_KEEP {
                self.queued.shrink_to(ARENA_KEEP);
                self.iov.shrink_to(ARENA_KEEP);
                self.msgs.shrink_to(ARENA_KEEP);
            }
        }
        Ok(())
    }

    /// Pushes the queued sends, if any (returns whether there were); their iovecs and
    /// message headers stay put until the enter that submits them returns.
    fn push_sends(&mut self, stats: &mut Stats) -> io::Result<bool> {
        if self.queued.is_empty() {
            return Ok(false);
        }
        self.msgs.clear();
        let multi = self.queued.iter().filter(|q| q.n > 1).count();
        self.msgs.reserve(multi);
        for i in 0..self.queued.len() {
            let q = &self.queued[i];
            let (token, fd, start, n) = (q.token, q.fd, q.start as usize, q.n as usize);
            let slot = match self.inflight_free.pop() {
                Some(s) => {
                    self.inflight[s as usize] = token;
                    s
                }
                None => {
                    self.inflight.push(token);
                    (self.inflight.len() - 1) as u32
                }
            };
            let flags = (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u32;
            let sqe = if n == 1 {
                let v = self.iov[start];
                Sqe {
                    opcode: OP_SEND,
                    fd,
                    addr: v.iov_base as u64,
                    // A u32 field: a larger piece goes out in several sends.
                    len: v.iov_len.min(1 << 30) as u32,
                    op_flags: flags,
                    user_data: TAG_SEND | u64::from(slot),
                    ..Default::default()
                }
            } else {
                // SAFETY: a zeroed msghdr is valid.
                let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                m.msg_iov = self.iov[start..].as_mut_ptr();
                m.msg_iovlen = n as _;
                // Reserved above: pushing never moves the headers already referenced.
                self.msgs.push(m);
                let m = self.msgs.last().expect("just pushed");
                Sqe {
                    opcode: OP_SENDMSG,
                    fd,
                    addr: m as *const libc::msghdr as u64,
                    len: 1,
                    op_flags: flags,
                    user_data: TAG_SEND | u64::from(slot),
                    ..Default::default()
                }
            };
            self.ring.push(sqe, stats)?;
        }
        Ok(true)
    }
}

impl Backend for Uring {
    fn fd(&self) -> RawFd {
        self.ring.fd.as_raw_fd()
    }

    fn wait(
        &mut self,
        changes: &[Change],
        failed: &mut Vec<(u64, io::Error)>,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let mut rearm = std::mem::take(&mut self.rearm);
        for token in rearm.drain(..) {
            // Not if it went away, or if a change below arms it anyway.
            let Some(reg) = self.regs.get(token) else {
                continue;
            };
            if !changes.iter().any(|c| c.token == token) {
                self.poll_add(token, reg, stats)?;
            }
        }
        self.rearm = rearm;
        let mut op_rearm = std::mem::take(&mut self.op_rearm);
        for token in op_rearm.drain(..) {
            if let Some(reg) = self.regs.get(token) {
                if reg.recv == R_WANT {
                    self.recv_arm(token, reg, stats)?;
                }
            }
        }
        self.op_rearm = op_rearm;
        for c in changes {
            self.apply(c, stats)?;
        }
        let sends = self.push_sends(stats)?;
        let (ready, overflow) = self.ring.has_completions();
        if self.ring.unsubmitted > 0 || overflow || !ready {
            let wait_nr = u32::from(timeout != Some(Duration::ZERO) && !ready);
            stats.wait += 1;
            self.ring.submit_and_wait(wait_nr, timeout)?;
        }
        self.submitted(sends, stats)?;
        let Uring {
            ring,
            regs,
            rearm,
            inflight,
            inflight_free,
            bufs,
            op_rearm,
            ops_armed,
            ..
        } = self;
        // Bounded like epoll's event buffer; what is left is reaped by the next wait,
        // which then does not block.
        ring.reap(MAX_EVENTS, |user_data, res, flags| {
            if is_internal(user_data) {
                if user_data & TAG_IGNORE == TAG_IGNORE {
                    return;
                }
                let slot = (user_data & 0x3fff_ffff) as u32;
                let Some(&token) = inflight.get(slot as usize) else {
                    return;
                };
                inflight_free.push(slot);
                if inflight_free.len() == inflight.len() && inflight.len() > ARENA_KEEP {
                    // None in flight after a burst: start the slab afresh, smaller.
                    inflight.clear();
                    inflight.shrink_to(ARENA_KEEP);
                    inflight_free.clear();
                    inflight_free.shrink_to(ARENA_KEEP);
                }
                events.push(Event {
                    token,
                    ready: Ready::SENT,
                    res,
                    buf: 0,
                    off: 0,
                });
                return;
            }
            if let Some((token, accept)) = op_token(user_data) {
                let ended = flags & CQE_F_MORE == 0;
                if ended {
                    *ops_armed -= 1;
                }
                let live = regs.get(token);
                if let Some(reg) = live {
                    op_ended(regs, op_rearm, token, reg, res, ended);
                }
                if accept {
                    if live.is_some() && res != -libc::ECANCELED {
                        events.push(Event {
                            token,
                            ready: Ready::ACCEPTED,
                            res,
                            buf: 0,
                            off: 0,
                        });
                    } else {
                        // Accepted for a listener closed since: nobody takes it.
                        close_accepted(res);
                    }
                    return;
                }
                let (Some(b), true) = (bufs.as_mut(), flags & CQE_F_BUFFER != 0 && res > 0) else {
                    // No bytes: EOF, an error, or the end of a cancelled or starved receive.
                    if live.is_some() && res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        events.push(Event {
                            token,
                            ready: Ready::RECEIVED,
                            // (Bytes without a buffer cannot happen with buffer
                            // selection: fail the connection, not the loop.)
                            res: if res > 0 { -libc::EIO } else { res },
                            buf: 0,
                            off: 0,
                        });
                    }
                    return;
                };
                let bid = flags >> CQE_BUFFER_SHIFT;
                let last = flags & CQE_F_BUF_MORE == 0;
                let off = b.piece(bid, res as u32, last);
                // Also for a token closed since: the buffer goes back in order, when the
                // loop has handed over (or dropped) every piece before this one.
                events.push(Event {
                    token,
                    ready: Ready::RECEIVED,
                    res,
                    buf: bid | if last { BUF_LAST } else { 0 },
                    off,
                });
                return;
            }
            let token = user_data;
            if regs.get(token).is_none() {
                // Removed since (its cancellation, or a report that raced it).
                return;
            }
            if res < 0 {
                if res != -libc::ECANCELED {
                    regs.remove(token);
                    failed.push((token, io::Error::from_raw_os_error(-res)));
                }
                return;
            }
            // A one-shot poll always ends; a multishot one ends when the kernel could not
            // post to a full ring. Either way the fd is armed again at the next wait.
            if flags & CQE_F_MORE == 0 {
                rearm.push(token);
            }
            events.push(Event {
                token,
                ready: ready_of(res as u32),
                res: 0,
                buf: 0,
                off: 0,
            });
        });
        Ok(())
    }

    fn deregister(&mut self, _fd: RawFd, token: u64, stats: &mut Stats) -> io::Result<()> {
        if !self.unregister(token, stats)? {
            return Ok(());
        }
        // Submitted now: the poll holds a reference to the file, which must not outlive
        // the caller's close by a whole iteration.
        stats.ctl += 1;
        self.ring.submit()
    }

    fn forget(&mut self, token: u64, now: bool, stats: &mut Stats) {
        // The fd is closed already, but the poll keeps the file open (a listener would
        // still accept, a socket would not send its FIN) until this removal is submitted:
        // by the next wait, or now.
        if let Ok(true) = self.unregister(token, stats) {
            if now {
                let _ = self.submit_pending(stats);
            }
        }
    }

    fn submit_pending(&mut self, stats: &mut Stats) -> io::Result<()> {
        let sends = self.push_sends(stats)?;
        self.submitted(sends, stats)
    }

    fn batches_sends(&self) -> bool {
        true
    }

    fn queue_send(&mut self, token: u64, fd: RawFd, iov: &[libc::iovec]) {
        self.queued.push(Queued {
            token,
            fd,
            start: self.iov.len() as u32,
            n: iov.len() as u32,
        });
        self.iov.extend_from_slice(iov);
    }

    fn has_queued(&self) -> bool {
        !self.queued.is_empty()
            || !self.rearm.is_empty()
            || !self.op_rearm.is_empty()
            || self.ring.unsubmitted > 0
    }

    fn receives(&self) -> bool {
        self.bufs.is_some()
    }

    fn accepts(&self) -> bool {
        self.accepts
    }

    fn recv_buf(&self, buf: u32, off: u32) -> *const u8 {
        let start = self.bufs.as_ref().expect("receiving").at(buf & !BUF_LAST);
        // SAFETY: `off` is where the piece starts inside the buffer (`RecvBufs::piece`
        // keeps it so that the piece ends inside).
        unsafe { start.add(off as usize) }
    }

    fn recv_done(&mut self, buf: u32) {
        if let (Some(b), true) = (self.bufs.as_mut(), buf & BUF_LAST != 0) {
            b.put(buf & !BUF_LAST);
        }
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // A receive still in the kernel could write into a buffer after the mapping is
        // gone, and an accept could take a connection nobody closes: cancel every one and
        // wait (briefly) for their ends before the fields drop.
        if self.ops_armed == 0 {
            return;
        }
        let mut stats = Stats::default();
        for i in 0..self.regs.by_slot.len() {
            let r = self.regs.by_slot[i];
            let _ = self.recv_set((u64::from(r.gen) << 32) | i as u64, false, &mut stats);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.ops_armed > 0 && Instant::now() < deadline {
            if self
                .ring
                .submit_and_wait(1, Some(Duration::from_millis(10)))
                .is_err()
            {
                break;
            }
            let ops = &mut self.ops_armed;
            self.ring.reap(u32::MAX, |user_data, res, flags| {
                let Some((_, accept)) = op_token(user_data) else {
                    return;
                };
                if flags & CQE_F_MORE == 0 {
                    *ops -= 1;
                }
                if accept {
                    close_accepted(res);
                }
            });
        }
        if self.ops_armed > 0 {
            log::warn!(
                "io_uring: {} receives or accepts did not end; leaking the receive buffers",
                self.ops_armed
            );
            std::mem::forget(self.bufs.take());
        }
    }
}
