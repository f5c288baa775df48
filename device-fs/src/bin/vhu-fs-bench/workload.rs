//! The workloads, as FUSE requests a Linux guest sends for them, one lane at a time: a lane is
//! one stream of dependent requests (a file's reads, or LOOKUP then GETATTR) with at most one
//! request in flight, and a queue at depth D runs D lanes. Each reply is checked — its size, its
//! contents where they are known (read data carries its own file offset) — and a wrong one ends
//! the run.
//!
//! This module must not touch rings or sockets: the guest driver sends what a lane asks for and
//! hands it the reply.

use zerocopy::{FromBytes, IntoBytes};

use vhu_device_fs::fuse::abi::{
    AttrOut, CreateIn, Dirent, EntryOut, ForgetIn, GetattrIn, OpenIn, OpenOut, ReadIn, ReleaseIn,
    WriteIn, WriteOut,
};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::Completed;

use crate::share::{small_name, BIG_ENTRIES, DATA_SIZE, SMALL_FILES};
use crate::written::Written;

/// A workload; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// 4 KiB reads at random aligned offsets of a pre-laid file.
    #[value(name = "rand-read-4k")]
    RandRead4k,
    /// 4 KiB writes at random aligned offsets of a pre-laid file.
    #[value(name = "rand-write-4k")]
    RandWrite4k,
    /// Sequential 128 KiB reads, split to the negotiated request size.
    #[value(name = "seq-read-128k")]
    SeqRead128k,
    /// Sequential 1 MiB reads, split to the negotiated request size.
    #[value(name = "seq-read-1m")]
    SeqRead1m,
    /// Sequential 128 KiB writes, split to the negotiated request size.
    #[value(name = "seq-write-128k")]
    SeqWrite128k,
    /// Sequential 1 MiB writes, split to the negotiated request size.
    #[value(name = "seq-write-1m")]
    SeqWrite1m,
    /// LOOKUP then GETATTR of existing files.
    LookupGetattr,
    /// CREATE, WRITE 4 KiB, RELEASE, UNLINK (and FORGET) of a new file, as a non-root guest
    /// user.
    CreateWriteUnlink,
    /// OPENDIR, READDIRPLUS to the end, RELEASEDIR of a 10 000-entry directory.
    Readdirplus,
}

impl Workload {
    /// Every workload, in the order a full run takes them.
    pub(crate) const ALL: [Self; 9] = [
        Self::RandRead4k,
        Self::RandWrite4k,
        Self::SeqRead128k,
        Self::SeqRead1m,
        Self::SeqWrite128k,
        Self::SeqWrite1m,
        Self::LookupGetattr,
        Self::CreateWriteUnlink,
        Self::Readdirplus,
    ];

    /// The name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::RandRead4k => "rand-read-4k",
            Self::RandWrite4k => "rand-write-4k",
            Self::SeqRead128k => "seq-read-128k",
            Self::SeqRead1m => "seq-read-1m",
            Self::SeqWrite128k => "seq-write-128k",
            Self::SeqWrite1m => "seq-write-1m",
            Self::LookupGetattr => "lookup-getattr",
            Self::CreateWriteUnlink => "create-write-unlink",
            Self::Readdirplus => "readdirplus",
        }
    }

    /// Bytes an application asks for at once (0 for metadata workloads).
    pub(crate) fn io_size(self) -> u32 {
        match self {
            Self::RandRead4k | Self::RandWrite4k => 4096,
            Self::SeqRead128k | Self::SeqWrite128k => 128 << 10,
            Self::SeqRead1m | Self::SeqWrite1m => 1 << 20,
            Self::LookupGetattr | Self::CreateWriteUnlink | Self::Readdirplus => 0,
        }
    }

    /// Bytes one request carries at most with requests of at most `chunk` bytes: the ring's
    /// buffers are sized from it.
    pub(crate) fn request_size(self, chunk: u32) -> u32 {
        match self {
            Self::CreateWriteUnlink => 4096,
            Self::LookupGetattr | Self::Readdirplus => 0,
            _ => self.io_size().min(chunk),
        }
    }

    /// Whether the requests write data (the request buffer holds it) or read it (the reply).
    pub(crate) fn writes(self) -> bool {
        matches!(
            self,
            Self::RandWrite4k | Self::SeqWrite128k | Self::SeqWrite1m | Self::CreateWriteUnlink
        )
    }
}

/// Bytes of a reply header.
const OUT: u32 = 16;

/// What the lanes of a run share: files opened through the first queue before it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    /// The read file's node and handle.
    pub(crate) data: (u64, u64),
    /// The write file's node and handle.
    pub(crate) wdata: (u64, u64),
    /// The big directory's node.
    pub(crate) big: u64,
    /// Largest READ or WRITE payload the back-end takes (negotiated in INIT).
    pub(crate) chunk: u32,
}

/// A request a lane sends, besides its body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Next {
    pub(crate) opcode: Opcode,
    pub(crate) nodeid: u64,
    /// The room its reply gets (what a Linux guest gives: the reply's size).
    pub(crate) room: u32,
    /// Bytes of WRITE data that follow the body from the request's pages, where the guest
    /// laid [`pattern`]`(0, ..)` once before the run (a guest's page cache holds the data it
    /// writes; its driver copies none).
    pub(crate) laid: u32,
}

impl Next {
    fn new(opcode: Opcode, nodeid: u64, room: u32) -> Self {
        Self { opcode, nodeid, room, laid: 0 }
    }
}

/// One stream of requests; see the module docs.
pub(crate) trait Lane: Send {
    /// Writes the next request's body into `body` (empty on entry); returns the rest of it.
    fn next(&mut self, body: &mut Vec<u8>) -> Next;
    /// Checks the reply to the request `next` gave.
    fn reply(&mut self, reply: &Completed<'_>) -> Result<(), String>;
    /// Data bytes the last request moved.
    fn bytes(&self) -> u64;
}

/// A small generator of offsets and names, deterministic per lane.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Lane `id` (unique over every queue of a run) of `workload`.
pub(crate) fn lane(workload: Workload, setup: Setup, id: u32, written: &Written) -> Box<dyn Lane> {
    let seed = seed(id);
    let size = workload.request_size(setup.chunk);
    match workload {
        Workload::RandRead4k | Workload::SeqRead128k | Workload::SeqRead1m => {
            let offsets = Offsets::new(workload, size, id);
            Box::new(Data { file: setup.data, size, written: None, offsets, offset: 0 })
        }
        Workload::RandWrite4k | Workload::SeqWrite128k | Workload::SeqWrite1m => {
            let offsets = Offsets::new(workload, size, id);
            let written = Some(written.clone());
            Box::new(Data { file: setup.wdata, size, written, offsets, offset: 0 })
        }
        Workload::LookupGetattr => Box::new(LookupGetattr { rng: seed, node: None }),
        Workload::CreateWriteUnlink => {
            // Unique in the process, so a run never meets the files an earlier run stopped
            // before unlinking (every run shares one directory).
            static LANES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let id = LANES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::new(Create { id, serial: 0, step: 0, node: 0, fh: 0, name: Vec::new() })
        }
        Workload::Readdirplus => {
            Box::new(Readdir { dir: setup.big, fh: None, offset: 0, seen: 0, done: false })
        }
    }
}

/// The pattern of the data files: each 8-byte word holds its own file offset.
pub(crate) fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, word) in buf.chunks_mut(8).enumerate() {
        let value = (offset + 8 * i as u64).to_le_bytes();
        word.copy_from_slice(&value[..word.len()]);
    }
}

/// Where a data lane's accesses of `size` bytes go in a data file: random aligned offsets, or
/// one after the other from a start spread over the file by the lane's id.
pub(crate) struct Offsets {
    size: u64,
    random: bool,
    rng: XorShift,
    /// The next sequential offset.
    cursor: u64,
}

impl Offsets {
    /// The offsets of lane `id` of `workload` (a data workload) with accesses of `size` bytes
    /// (not 0).
    pub(crate) fn new(workload: Workload, size: u32, id: u32) -> Self {
        let random = matches!(workload, Workload::RandRead4k | Workload::RandWrite4k);
        // Sequential lanes start spread over the file.
        let size = u64::from(size);
        let cursor = (u64::from(id) * 7919 % (DATA_SIZE / size)) * size;
        Self { size, random, rng: seed(id), cursor }
    }

    /// The next access's offset.
    pub(crate) fn next(&mut self) -> u64 {
        let size = self.size;
        if self.random {
            return self.rng.next() % (DATA_SIZE / size) * size;
        }
        let at = self.cursor;
        self.cursor = (self.cursor + size) % (DATA_SIZE - DATA_SIZE % size);
        at
    }
}

/// Lane `id`'s generator of offsets and names.
fn seed(id: u32) -> XorShift {
    XorShift(0x9e37_79b9_7f4a_7c15 ^ (u64::from(id) + 1).wrapping_mul(0x1000_0001))
}

/// Checks that `size` bytes read at `offset` (at least 8) hold the data file's pattern where
/// `word_at` finds them: the first word of each 4 KiB page and the last word (a page in the
/// wrong place, or left unwritten, shows in its first word).
pub(crate) fn check_read(
    offset: u64,
    size: usize,
    mut word_at: impl FnMut(usize) -> Result<[u8; 8], String>,
) -> Result<bool, String> {
    let last = size - 8;
    for at in (0..size).step_by(4096).chain([last]) {
        let mut want = [0; 8];
        pattern(offset + at as u64, &mut want);
        if word_at(at)? != want {
            return Ok(false);
        }
    }
    Ok(true)
}

/// READs or WRITEs of one file, at random aligned offsets or one after the other.
struct Data {
    file: (u64, u64),
    size: u32,
    /// Where a WRITE lane records what it wrote (None for READs).
    written: Option<Written>,
    offsets: Offsets,
    /// The offset of the request in flight.
    offset: u64,
}

impl Lane for Data {
    fn next(&mut self, body: &mut Vec<u8>) -> Next {
        self.offset = self.offsets.next();
        let (node, fh) = self.file;
        if self.written.is_some() {
            let head = WriteIn { fh, offset: self.offset, size: self.size, ..WriteIn::default() };
            body.extend_from_slice(head.as_bytes());
            Next { laid: self.size, ..Next::new(Opcode::Write, node, OUT + 8) }
        } else {
            let read = ReadIn { fh, offset: self.offset, size: self.size, ..ReadIn::default() };
            body.extend_from_slice(read.as_bytes());
            Next::new(Opcode::Read, node, OUT + self.size)
        }
    }

    fn reply(&mut self, reply: &Completed<'_>) -> Result<(), String> {
        if let Some(written) = &self.written {
            let out = WriteOut::read_from_prefix(reply.payload).map_err(|_| "short WRITE reply")?.0;
            if out.size != self.size {
                return Err(format!("WRITE of {} bytes wrote {}", self.size, out.size));
            }
            written.mark(self.offset, self.size);
            return Ok(());
        }
        if reply.len() != self.size as usize {
            return Err(format!("READ of {} bytes returned {}", self.size, reply.len()));
        }
        // The data stays in guest memory; each page's first word carries its offset.
        let word_at = |at| {
            let mut word = [0u8; 8];
            reply.read_at(at, &mut word).map(|()| word).map_err(|e| e.to_string())
        };
        if !check_read(self.offset, reply.len(), word_at)? {
            return Err(format!("READ at {} returned other bytes", self.offset));
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        u64::from(self.size)
    }
}

/// LOOKUP of a file, then GETATTR of the node it named.
struct LookupGetattr {
    rng: XorShift,
    node: Option<u64>,
}

impl Lane for LookupGetattr {
    fn next(&mut self, body: &mut Vec<u8>) -> Next {
        match self.node {
            None => {
                let i = self.rng.next() % u64::from(SMALL_FILES);
                body.extend_from_slice(small_name(i as u32).as_bytes());
                body.push(0);
                Next::new(Opcode::Lookup, 1, OUT + 128)
            }
            Some(node) => {
                body.extend_from_slice(GetattrIn::default().as_bytes());
                Next::new(Opcode::Getattr, node, OUT + 104)
            }
        }
    }

    fn reply(&mut self, reply: &Completed<'_>) -> Result<(), String> {
        match self.node.take() {
            None => {
                let entry = EntryOut::read_from_prefix(reply.payload).map_err(|_| "short entry")?.0;
                if entry.nodeid == 0 || entry.attr.size != 5 {
                    return Err(format!("LOOKUP named node {}", entry.nodeid));
                }
                self.node = Some(entry.nodeid);
            }
            Some(_) => {
                let attr = AttrOut::read_from_prefix(reply.payload).map_err(|_| "short attr")?.0;
                if attr.attr.size != 5 {
                    return Err(format!("GETATTR said {} bytes", attr.attr.size));
                }
            }
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        0
    }
}

/// CREATE a new file, WRITE 4 KiB to it, RELEASE it, UNLINK it, FORGET its node as the guest
/// does when it evicts the inode.
struct Create {
    id: u32,
    serial: u64,
    step: u8,
    node: u64,
    fh: u64,
    name: Vec<u8>,
}

impl Lane for Create {
    fn next(&mut self, body: &mut Vec<u8>) -> Next {
        match self.step {
            0 => {
                self.serial += 1;
                self.name = format!("new-{}-{}\0", self.id, self.serial).into_bytes();
                // O_WRONLY | O_CREAT | O_EXCL, as open(2) with O_EXCL sends it.
                let create = CreateIn { flags: 0o301, mode: 0o100644, umask: 0o022, open_flags: 0 };
                body.extend_from_slice(create.as_bytes());
                body.extend_from_slice(&self.name);
                Next::new(Opcode::Create, 1, OUT + 128 + 16)
            }
            1 => {
                let head = WriteIn { fh: self.fh, size: 4096, ..WriteIn::default() };
                body.extend_from_slice(head.as_bytes());
                Next { laid: 4096, ..Next::new(Opcode::Write, self.node, OUT + 8) }
            }
            2 => {
                body.extend_from_slice(
                    ReleaseIn { fh: self.fh, ..ReleaseIn::default() }.as_bytes(),
                );
                Next::new(Opcode::Release, self.node, OUT)
            }
            3 => {
                body.extend_from_slice(&self.name);
                Next::new(Opcode::Unlink, 1, OUT)
            }
            _ => {
                // The guest drops the unlinked inode: the back-end may let its file go.
                body.extend_from_slice(ForgetIn { nlookup: 1 }.as_bytes());
                Next::new(Opcode::Forget, self.node, 0)
            }
        }
    }

    fn reply(&mut self, reply: &Completed<'_>) -> Result<(), String> {
        match self.step {
            0 => {
                let (entry, rest) =
                    EntryOut::read_from_prefix(reply.payload).map_err(|_| "short entry")?;
                let open = OpenOut::read_from_prefix(rest).map_err(|_| "short CREATE reply")?.0;
                if entry.attr.uid != crate::guest::GUEST_USER.0 {
                    return Err(format!("CREATE made a file of uid {}", entry.attr.uid));
                }
                (self.node, self.fh) = (entry.nodeid, open.fh);
            }
            1 => {
                let out =
                    WriteOut::read_from_prefix(reply.payload).map_err(|_| "short WRITE reply")?.0;
                if out.size != 4096 {
                    return Err(format!("WRITE of 4096 bytes wrote {}", out.size));
                }
            }
            _ => {}
        }
        self.step = (self.step + 1) % 5;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        if self.step == 2 {
            4096
        } else {
            0
        }
    }
}

/// Every entry of the big directory: OPENDIR, READDIRPLUS until an empty reply, RELEASEDIR.
struct Readdir {
    dir: u64,
    fh: Option<u64>,
    offset: u64,
    seen: u32,
    done: bool,
}

/// What one READDIRPLUS reply held: entries and the offset to continue from.
fn direntplus(payload: &[u8]) -> Result<(u32, Option<u64>), String> {
    let (mut rest, mut count, mut last) = (payload, 0, None);
    while !rest.is_empty() {
        let (_, after) = EntryOut::read_from_prefix(rest).map_err(|_| "short direntplus")?;
        let (dirent, names) = Dirent::read_from_prefix(after).map_err(|_| "short dirent")?;
        let len = (dirent.namelen as usize).next_multiple_of(8);
        if dirent.namelen == 0 || names.len() < len {
            return Err("a truncated dirent".into());
        }
        rest = &names[len..];
        count += 1;
        last = Some(dirent.off);
    }
    Ok((count, last))
}

impl Lane for Readdir {
    fn next(&mut self, body: &mut Vec<u8>) -> Next {
        match (self.fh, self.done) {
            (None, _) => {
                body.extend_from_slice(OpenIn { flags: 0o200_000, open_flags: 0 }.as_bytes());
                Next::new(Opcode::Opendir, self.dir, OUT + 16)
            }
            (Some(fh), false) => {
                let read = ReadIn { fh, offset: self.offset, size: 4096, ..ReadIn::default() };
                body.extend_from_slice(read.as_bytes());
                Next::new(Opcode::Readdirplus, self.dir, OUT + 4096)
            }
            (Some(fh), true) => {
                body.extend_from_slice(ReleaseIn { fh, ..ReleaseIn::default() }.as_bytes());
                Next::new(Opcode::Releasedir, self.dir, OUT)
            }
        }
    }

    fn reply(&mut self, reply: &Completed<'_>) -> Result<(), String> {
        match (self.fh, self.done) {
            (None, _) => {
                let open =
                    OpenOut::read_from_prefix(reply.payload).map_err(|_| "short OPENDIR reply")?;
                self.fh = Some(open.0.fh);
                (self.offset, self.seen) = (0, 0);
            }
            (Some(_), false) => {
                let (count, last) = direntplus(reply.payload)?;
                self.seen += count;
                match last {
                    Some(offset) => self.offset = offset,
                    None if self.seen < BIG_ENTRIES => {
                        return Err(format!("READDIRPLUS ended after {} entries", self.seen));
                    }
                    None => self.done = true,
                }
            }
            (Some(_), true) => (self.fh, self.done) = (None, false),
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::{check_read, pattern};

    /// A read whose pages came back in the wrong order fails the check, though its first and
    /// last words are right.
    #[test]
    fn a_page_out_of_place_fails_the_read_check() {
        let offset = 1 << 20;
        let mut data = vec![0u8; 16 << 10];
        pattern(offset, &mut data);
        let word_at = |data: &[u8]| {
            let data = data.to_vec();
            move |at: usize| Ok(data[at..at + 8].try_into().expect("a word"))
        };
        assert_eq!(check_read(offset, data.len(), word_at(&data)), Ok(true));
        let (second, third) = data[4096..12288].split_at_mut(4096);
        second.swap_with_slice(third);
        assert_eq!(check_read(offset, data.len(), word_at(&data)), Ok(false));
    }
}
