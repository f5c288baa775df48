//! A directory handle's cursor: where its host descriptor stands and the `getdents64` records
//! read past what the last reply took. A guest continues a listing from the cookie the last
//! reply ended with, so the next request starts from those records: no seek, and no entry
//! read twice (a READDIRPLUS reply holds far fewer entries than a `getdents64` buffer of the
//! same size). A listing from any other cookie drops them and seeks.
//!
//! This module owns no descriptor (the handle does) and decides nothing about replies; the
//! handle's lock serialises its use.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Bytes of records read at once: about a hundred short names. What is left after a reply
/// stays with the handle until the listing goes on, so this bounds each handle's memory.
const CHUNK: usize = 4096;

/// Records kept between replies by all handles together, at most: past it a reply's leftovers
/// are dropped (that listing seeks and reads again), so a guest holding many directories
/// half-listed cannot grow the daemon's memory by a page each.
const MAX_KEPT: usize = 64 << 20;

/// Bytes of records all cursors keep now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// `struct linux_dirent64` before its name: inode (8), next cookie (8), record length (2), type
/// (1).
const HEADER: usize = 19;

/// One directory entry as the host listed it.
#[derive(Debug)]
pub(super) struct Record<'a> {
    /// Host inode number.
    pub ino: u64,
    /// The cookie that continues the listing after this entry.
    pub next: u64,
    /// `d_type`.
    pub typ: u8,
    /// The name.
    pub name: &'a CStr,
    /// Length of the record.
    len: usize,
}

/// How far a record takes the listing: its length, and the cookie after it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step(usize, u64);

impl Record<'_> {
    /// What [`DirCursor::advance`] needs once this entry went to the guest.
    pub(super) fn step(&self) -> Step {
        Step(self.len, self.next)
    }
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct DirCursor {
    /// Where the descriptor stands (the cookie after the last record read), if known.
    pos: Option<u64>,
    /// The records last read; those from `at` are not yet given to the guest.
    buf: Vec<u8>,
    at: usize,
    /// The cookie at which `buf[at..]` begins.
    resume: u64,
    /// The cookie at which `buf` begins.
    first: u64,
    /// Where the records kept by all cursors are counted ([`KEPT`], outside tests), and how
    /// many bytes of them may stay between replies ([`MAX_KEPT`]).
    kept: &'static AtomicUsize,
    max_kept: usize,
}

impl DirCursor {
    /// A cursor on a descriptor just opened (at the start of the directory).
    pub(super) fn new() -> Self {
        Self::counted_in(&KEPT, MAX_KEPT)
    }

    /// [`DirCursor::new`], its records counted in `kept`, which may hold `max_kept` bytes.
    fn counted_in(kept: &'static AtomicUsize, max_kept: usize) -> Self {
        Self { pos: Some(0), buf: Vec::new(), at: 0, resume: 0, first: 0, kept, max_kept }
    }

    /// Places the listing at `offset`: the records last read are kept when it lies among them
    /// (the guest may continue from inside the last reply, when its reader took only part of
    /// it), else dropped, and the descriptor seeks unless it stands there already.
    pub(super) fn start(&mut self, fd: impl AsFd, offset: u64) -> Result<(), Errno> {
        // Offset 0 is a new listing (`rewinddir`): the directory is read afresh, as it is now.
        if let Some(at) = self.find(offset).filter(|_| offset != 0) {
            (self.at, self.resume) = (at, offset);
            return Ok(());
        }
        self.drop_ahead();
        if self.pos != Some(offset) {
            self.pos = None;
            rustix::fs::seek(&fd, SeekFrom::Start(offset))?;
            self.pos = Some(offset);
        }
        self.resume = offset;
        Ok(())
    }

    /// The next entry, reading more records when none is left; `None` at the end of the
    /// directory.
    pub(super) fn peek(&mut self, fd: impl AsFd) -> Result<Option<Record<'_>>, Errno> {
        if self.at >= self.buf.len() {
            self.fill(fd)?;
            if self.buf.is_empty() {
                return Ok(None);
            }
        }
        // `fill` checked every record it kept.
        Ok(parse(&self.buf[self.at..]))
    }

    /// The entry whose [`Record::step`] this is went to the guest: the listing continues
    /// after it.
    pub(super) fn advance(&mut self, Step(len, next): Step) {
        self.at += len;
        self.resume = next;
        if self.at >= self.buf.len() {
            self.drop_ahead();
        }
    }

    /// Where in `buf` the listing from cookie `offset` begins, if it begins there before the
    /// end.
    fn find(&self, offset: u64) -> Option<usize> {
        if self.buf.is_empty() {
            return None;
        }
        if offset == self.first {
            return Some(0);
        }
        let mut at = 0;
        while let Some(record) = self.buf.get(at..).and_then(parse) {
            at += record.len;
            if record.next == offset {
                return (at < self.buf.len()).then_some(at);
            }
        }
        None
    }

    /// A reply is done: what it left stays for the next one unless the cursors together
    /// keep too much already.
    pub(super) fn finish(&mut self) {
        if self.kept.load(Ordering::Relaxed) > self.max_kept {
            self.drop_ahead();
        }
    }

    fn drop_ahead(&mut self) {
        // Nothing kept between listings but what is ahead: the memory goes with it.
        self.kept.fetch_sub(self.buf.len(), Ordering::Relaxed);
        self.buf = Vec::new();
        self.at = 0;
    }

    /// Reads the next records (none at the end) and checks each is whole.
    fn fill(&mut self, fd: impl AsFd) -> Result<(), Errno> {
        let mut buf = vec![0u8; CHUNK];
        let fd = fd.as_fd();
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which outlives the
        // call, and `fd` is borrowed (open) for it.
        let got = unsafe {
            libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len())
        };
        let got = usize::try_from(got).map_err(|_| {
            // The position is unknown after a failure: the next listing seeks.
            self.pos = None;
            Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
        })?;
        if got == 0 {
            // The end: nothing is kept.
            self.drop_ahead();
            return Ok(());
        }
        buf.truncate(got);
        self.first = self.pos.unwrap_or(self.resume);
        let mut at = 0;
        while at < buf.len() {
            let Some(record) = parse(&buf[at..]) else {
                self.pos = None;
                return Err(Errno::IO);
            };
            self.pos = Some(record.next);
            at += record.len;
        }
        self.drop_ahead();
        self.kept.fetch_add(buf.len(), Ordering::Relaxed);
        self.buf = buf;
        Ok(())
    }
}

impl Drop for DirCursor {
    fn drop(&mut self) {
        self.drop_ahead();
    }
}

/// The record at the start of `bytes`, if it is whole and well formed.
fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let (ino, next) = (word(0)?, word(8)?);
    let len = usize::from(u16::from_ne_bytes(bytes.get(16..18)?.try_into().ok()?));
    let typ = *bytes.get(18)?;
    let name = CStr::from_bytes_until_nul(bytes.get(HEADER..len)?).ok()?;
    (len > HEADER).then_some(Record { ino, next, typ, name, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the kernel lays it out (padded to 8 bytes).
    fn record(ino: u64, next: u64, typ: u8, name: &str) -> Vec<u8> {
        let len = (HEADER + name.len() + 1).next_multiple_of(8);
        let mut r = Vec::with_capacity(len);
        r.extend_from_slice(&ino.to_ne_bytes());
        r.extend_from_slice(&next.to_ne_bytes());
        r.extend_from_slice(&(len as u16).to_ne_bytes());
        r.push(typ);
        r.extend_from_slice(name.as_bytes());
        r.resize(len, 0);
        r
    }

    #[test]
    fn records_parse_and_broken_ones_do_not() {
        let r = record(7, 99, 8, "name");
        let parsed = parse(&r).expect("a record");
        assert_eq!((parsed.ino, parsed.next, parsed.typ, parsed.len), (7, 99, 8, 24));
        assert_eq!(parsed.name.to_bytes(), b"name");
        assert!(parse(&r[..20]).is_none(), "cut short");
        let mut no_nul = r.clone();
        no_nul[HEADER..].fill(b'x');
        assert!(parse(&no_nul).is_none(), "a name without its NUL");
        let mut short = r;
        short[16..18].copy_from_slice(&(HEADER as u16).to_ne_bytes());
        assert!(parse(&short).is_none(), "a length that holds no name");
    }

    /// A listing taken a few entries at a time, as replies take it, reads each record once
    /// and seeks only when asked for another cookie.
    #[test]
    fn a_listing_continued_where_it_ended_neither_seeks_nor_rereads() {
        let dir = std::env::temp_dir().join(format!("vhu-dir-cursor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("dir");
        for i in 0..300 {
            std::fs::write(dir.join(format!("entry-{i:03}")), b"").expect("file");
        }
        let fd = std::fs::File::open(&dir).expect("open");
        let mut cursor = DirCursor::new();
        let (mut names, mut offset, mut reads) = (Vec::new(), 0, 0);
        loop {
            cursor.start(&fd, offset).expect("start");
            let mut took = 0;
            while took < 7 {
                let had = cursor.buf.is_empty();
                let Some(r) = cursor.peek(&fd).expect("peek") else { break };
                reads += usize::from(had);
                names.push(r.name.to_string_lossy().into_owned());
                let step = r.step();
                cursor.advance(step);
                offset = step.1;
                took += 1;
            }
            if took == 0 {
                break;
            }
        }
        names.retain(|n| n.starts_with("entry-"));
        names.sort();
        let want: Vec<String> = (0..300).map(|i| format!("entry-{i:03}")).collect();
        assert_eq!(names, want, "every entry once");
        assert!(reads < 300 / 7, "{reads} reads: records were kept between replies");
        // A guest whose reader took only part of a reply continues from inside it: the records
        // read are used again, without a seek.
        cursor.start(&fd, 0).expect("rewind");
        let mut steps = Vec::new();
        for _ in 0..3 {
            let r = cursor.peek(&fd).expect("peek").expect("an entry");
            let (name, step) = (r.name.to_owned(), r.step());
            steps.push((name, step));
            cursor.advance(step);
        }
        cursor.start(&fd, steps[0].1 .1).expect("from inside");
        assert_eq!(cursor.at, steps[0].1 .0, "taken from what was read");
        let again = cursor.peek(&fd).expect("peek").expect("an entry");
        assert_eq!(again.name, &*steps[1].0);
        // Back to the start: the directory is read again as it is now, not from what was
        // kept (a name removed since is gone).
        let mut at = 0;
        let mut kept = Vec::new();
        while let Some(r) = cursor.buf.get(at..).and_then(parse) {
            kept.push(r.name.to_string_lossy().into_owned());
            at += r.len;
        }
        let removed = kept.into_iter().find(|n| n.starts_with("entry-")).expect("a kept entry");
        std::fs::remove_file(dir.join(&removed)).expect("remove");
        cursor.start(&fd, 0).expect("rewind");
        let mut listed = Vec::new();
        while let Some(r) = cursor.peek(&fd).expect("peek") {
            listed.push(r.name.to_string_lossy().into_owned());
            let step = r.step();
            cursor.advance(step);
        }
        assert!(listed.iter().any(|n| n.starts_with("entry-")), "listed again");
        assert!(!listed.contains(&removed), "{removed} was removed before the rewind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What replies leave is kept while all cursors together keep no more than their most,
    /// and dropped past it (that listing then seeks and reads again); a cursor that goes gives
    /// back what it kept.
    #[test]
    fn read_ahead_is_kept_only_up_to_the_most_all_cursors_may_keep() {
        static HERE: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("vhu-dir-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("dir");
        for i in 0..300 {
            std::fs::write(dir.join(format!("entry-{i:03}")), b"").expect("file");
        }
        let (a_fd, b_fd) =
            (std::fs::File::open(&dir).expect("a"), std::fs::File::open(&dir).expect("b"));
        // Room for one chunk of records: the first cursor's stay, the second's go.
        let mut a = DirCursor::counted_in(&HERE, CHUNK);
        let mut b = DirCursor::counted_in(&HERE, CHUNK);
        let take_one = |c: &mut DirCursor, fd: &std::fs::File| {
            c.start(fd, 0).expect("start");
            let step = c.peek(fd).expect("peek").expect("an entry").step();
            c.advance(step);
            c.finish();
        };
        take_one(&mut a, &a_fd);
        assert!(!a.buf.is_empty(), "under the most: kept");
        let after_a = HERE.load(Ordering::Relaxed);
        assert_eq!(after_a, a.buf.len());
        take_one(&mut b, &b_fd);
        assert!(b.buf.is_empty(), "past the most: dropped");
        assert_eq!(HERE.load(Ordering::Relaxed), after_a, "and no longer counted");
        drop(a);
        assert_eq!(HERE.load(Ordering::Relaxed), 0, "a cursor that goes gives back what it kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
