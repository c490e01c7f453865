//! The open-file cache (nginx's `open_file_cache`): what opening and `fstat`ing a path gave
//! (the open file, its size, time and type, or the error) is kept for a short time, so that
//! a hot file costs no `open`/`fstat` per request. Bounded: at most `max` entries (each
//! found file holds one descriptor); when full, expired entries go first, then the least
//! recently used. An entry older than `valid` is looked up again (a file replaced on disk
//! is seen within that time). Per loop (not shared between threads).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    /// A FIFO, socket or device: never served.
    Other,
}

/// An opened path and its metadata.
pub(crate) struct Opened {
    pub(crate) file: Rc<File>,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    /// Modification time, seconds since the epoch.
    pub(crate) mtime: u64,
    /// Its strong ETag.
    pub(crate) etag: String,
}

impl Opened {
    /// Takes the metadata of an opened file (one `fstat`).
    pub(crate) fn new(file: File) -> io::Result<Opened> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        };
        let mtime = u64::try_from(m.mtime()).unwrap_or(0);
        let nanos = u32::try_from(m.mtime_nsec()).unwrap_or(0);
        Ok(Opened {
            etag: super::cond::etag(mtime, nanos, m.len()),
            file: Rc::new(file),
            kind,
            size: m.len(),
            mtime,
        })
    }
}

/// The result of a lookup: the opened path, or the OS error (errno) it gave.
pub(crate) type Found = Result<Rc<Opened>, i32>;

struct Entry {
    found: Found,
    /// When it was looked up.
    checked: Instant,
    /// When it was last used.
    used: Instant,
}

/// Counters of the cache (see [`super::FileServer::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Paths opened (an `open` and an `fstat` each, or a failed open).
    pub opens: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Entries held now.
    pub entries: usize,
}

pub(crate) struct Cache {
    map: HashMap<Vec<u8>, Entry>,
    max: usize,
    valid: Duration,
    pub(crate) stats: CacheStats,
}

impl Cache {
    pub(crate) fn new(max: usize, valid: Duration) -> Cache {
        Cache {
            map: HashMap::new(),
            max,
            valid,
            stats: CacheStats::default(),
        }
    }

    /// The entry for `key`, from the cache if it is fresh, else from `open` (kept).
    pub(crate) fn get(
        &mut self,
        key: &[u8],
        now: Instant,
        open: impl FnOnce() -> io::Result<Opened>,
    ) -> Found {
        if let Some(e) = self.map.get_mut(key) {
            if now.saturating_duration_since(e.checked) < self.valid {
                e.used = now;
                self.stats.hits += 1;
                return e.found.clone();
            }
        }
        self.stats.opens += 1;
        let found = open()
            .map(Rc::new)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        if self.max > 0 {
            if self.map.len() >= self.max && !self.map.contains_key(key) {
                self.evict(now);
            }
            let entry = Entry {
                found: found.clone(),
                checked: now,
                used: now,
            };
            self.map.insert(key.to_vec(), entry);
        }
        self.stats.entries = self.map.len();
        found
    }

    /// Makes room for one entry: the expired ones go, or else the least recently used.
    fn evict(&mut self, now: Instant) {
        let valid = self.valid;
        self.map
            .retain(|_, e| now.saturating_duration_since(e.checked) < valid);
        if self.map.len() >= self.max {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cache, Opened};
    use std::time::{Duration, Instant};

    fn opener(path: &std::path::Path) -> impl FnOnce() -> std::io::Result<Opened> + '_ {
        move || Opened::new(std::fs::File::open(path)?)
    }

    #[test]
    fn hits_within_the_validity_then_looks_again_and_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("myriad-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut c = Cache::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let a = c.get(b"f", t0, opener(&f)).unwrap();
        assert_eq!(a.size, 3);
        for i in 0..10 {
            let b = c
                .get(b"f", t0 + Duration::from_millis(i * 50), opener(&f))
                .unwrap();
            assert!(std::rc::Rc::ptr_eq(&a, &b));
        }
        assert_eq!((c.stats.opens, c.stats.hits), (1, 10));
        // Errors are kept too.
        let missing = dir.join("missing");
        assert_eq!(c.get(b"m", t0, opener(&missing)).err(), Some(libc::ENOENT));
        assert_eq!(c.get(b"m", t0, opener(&missing)).err(), Some(libc::ENOENT));
        assert_eq!(c.stats.opens, 2);
        // Past the validity the file is opened again (and a change seen).
        std::fs::write(&f, b"abcdef").unwrap();
        let later = t0 + Duration::from_secs(2);
        assert_eq!(c.get(b"f", later, opener(&f)).unwrap().size, 6);
        // Bounded: a third key evicts (the expired "m" first).
        c.get(b"g", later, opener(&f)).unwrap();
        assert_eq!(c.stats.entries, 2);
        c.get(b"h", later + Duration::from_millis(1), opener(&f))
            .unwrap();
        assert_eq!(c.stats.entries, 2);
        // Without entries nothing is kept.
        let mut none = Cache::new(0, Duration::from_secs(1));
        none.get(b"f", t0, opener(&f)).unwrap();
        none.get(b"f", t0, opener(&f)).unwrap();
        assert_eq!((none.stats.opens, none.stats.entries), (2, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
