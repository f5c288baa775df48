//! SETUPMAPPING and REMOVEMAPPING: file ranges into and out of the device's DAX window.
//!
//! The server keeps the record of the window — which ranges hold a mapping — so that it never
//! asks the [`Window`] for what the vhost-user spec forbids: a mapping that overlaps another
//! ("BACKEND_SHMEM_MAP": overlapping an existing mapping must fail) is preceded by the removal
//! of those it overlaps (Linux maps a range again to make it writable), and a removal names
//! whole mappings only ("BACKEND_SHMEM_UNMAP"). Ranges are checked against the window and the
//! page alignment INIT announced. One lock is held across each operation, so two never
//! interleave. A request whose outcome is unknown (no answer came) leaves its range on record
//! as perhaps mapped: a later mapping over it asks for its removal first, and the front-end's
//! refusal of that removal then means it was not there (a removal never sent means nothing).
//! Without a window both opcodes answer ENOSYS, as a server without DAX does.
//!
//! A session's end (INIT, DESTROY, a device reset) empties the window, and a SETUPMAPPING that
//! began in the session before must not map after that. The session ends first (the gate no
//! request passes until the next INIT), then a new era of the window begins, then the window is
//! emptied; a mapping notes the era as it begins and checks under the lock that the era still
//! holds and the session is open (EIO otherwise). Either it mapped before the emptying took the
//! lock, which then removes it, or it maps nothing: one that noted the old era finds it over,
//! and one that noted the new era finds the session ended (all three are sequentially
//! consistent, so noting the new era means the gate had closed). No mapping of a session
//! outlives it into the next (nor keeps a guest from migrating).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use rustix::io::Errno;

use super::{OpResult, Reply, Request, Server, PAGE_SIZE};
use crate::fuse::abi::{
    RemoveMappingIn, RemoveMappingOne, SetupMappingIn, REMOVEMAPPING_MAX_ENTRY,
    SETUPMAPPING_FLAG_READ, SETUPMAPPING_FLAG_WRITE, SETUPMAPPING_NO_HANDLE,
};
use crate::fuse::filesystem::FileSystem;
use crate::fuse::types::Handle;
use crate::fuse::window::{Placement, Window, WindowError};

/// The page every offset and length in the window must be a multiple of: the host's (the VMM
/// maps file ranges with mmap(2), which takes nothing finer; 16 or 64 KiB on some arm64 and
/// ppc64el hosts), never below the 4 KiB the guest counts in.
fn map_page() -> u64 {
    (rustix::param::page_size() as u64).max(u64::from(PAGE_SIZE))
}

/// `map_alignment` announced in INIT: log2 of [`map_page`].
pub(super) fn map_alignment_shift() -> u16 {
    map_page().trailing_zeros() as u16
}

/// A mapping on record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mapped {
    len: u64,
    /// Whether the front-end said it is in place (else it may be: no answer came).
    certain: bool,
}

/// The mappings in the window: offset → mapping.
pub(super) type Mappings = BTreeMap<u64, Mapped>;

/// Removes the mapping at `at` from the window, keeping the record true: gone when the window
/// removed it, or the front-end refused to remove one that was perhaps never there; kept
/// otherwise (as it was when nobody was asked, perhaps mapped when no answer came), with the
/// errno the guest hears.
fn remove(window: &dyn Window, mappings: &mut Mappings, at: u64) -> Result<(), Errno> {
    let Some(mapped) = mappings.get(&at).copied() else { return Ok(()) };
    match window.unmap(at, mapped.len) {
        Ok(()) => {
            mappings.remove(&at);
            Ok(())
        }
        Err(WindowError::Refused(_)) if !mapped.certain => {
            mappings.remove(&at);
            Ok(())
        }
        Err(error) => {
            let known = matches!(error, WindowError::Refused(_) | WindowError::NotAsked(_));
            let certain = mapped.certain && known;
            mappings.insert(at, Mapped { len: mapped.len, certain });
            Err(error.errno())
        }
    }
}

/// Removes the mappings at `doomed` in turn, up to the first that fails: a front-end that
/// failed one (or did not answer) would fail the rest too, each after its own wait, with every
/// other mapping operation waiting on the lock; those left stay on record.
fn remove_each(window: &dyn Window, mappings: &mut Mappings, doomed: &[u64]) -> Result<(), Errno> {
    doomed.iter().try_for_each(|at| remove(window, mappings, *at))
}

/// The end of `len` bytes at `moffset` when the range is page-aligned, not empty and inside a
/// window of `size` bytes.
fn checked_end(moffset: u64, len: u64, size: u64) -> Result<u64, Errno> {
    let page = map_page();
    if len == 0 || moffset % page != 0 || len % page != 0 {
        return Err(Errno::INVAL);
    }
    moffset.checked_add(len).filter(|end| *end <= size).ok_or(Errno::INVAL)
}

impl<F: FileSystem> Server<F> {
    pub(super) fn do_setupmapping(&self, req: Request<'_>) -> OpResult {
        let era = self.window_era.load(Ordering::SeqCst);
        self.setup_mapping_in(req, era)
    }

    /// SETUPMAPPING for a request that arrived in `era`.
    fn setup_mapping_in(&self, mut req: Request<'_>, era: u64) -> OpResult {
        let window = self.window.as_ref().ok_or(Errno::NOSYS)?;
        let args: SetupMappingIn = req.take()?;
        if args.flags & !(SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE) != 0 {
            return Err(Errno::INVAL);
        }
        let writable = args.flags & SETUPMAPPING_FLAG_WRITE != 0;
        if writable && self.config.read_only {
            return Err(Errno::ROFS);
        }
        let end = checked_end(args.moffset, args.len, window.size())?;
        // A file offset is an off_t: none past i64::MAX.
        let file_end = args.foffset.checked_add(args.len).filter(|end| *end <= i64::MAX as u64);
        if args.foffset % map_page() != 0 || file_end.is_none() {
            return Err(Errno::INVAL);
        }
        let handle = (args.fh != SETUPMAPPING_NO_HANDLE).then_some(Handle(args.fh));
        let fd = self.fs.mapping_fd(&req.ctx(), req.node(), handle, writable)?;
        let mut mappings = self.mappings();
        if self.window_era.load(Ordering::SeqCst) != era || !self.initialized.load(Ordering::SeqCst)
        {
            // The session it came in has ended, and its mappings with it.
            return Err(Errno::IO);
        }
        let overlapped: Vec<u64> = mappings
            .range(..end)
            .filter(|(at, mapped)| *at + mapped.len > args.moffset)
            .map(|(at, _)| *at)
            .collect();
        for at in overlapped {
            remove(window.as_ref(), &mut mappings, at)?;
        }
        let placement =
            Placement { foffset: args.foffset, moffset: args.moffset, len: args.len, writable };
        let certain = match window.map(fd, placement) {
            Ok(()) => true,
            Err(WindowError::Refused(errno) | WindowError::NotAsked(errno)) => return Err(errno),
            Err(WindowError::Unknown(errno)) => {
                mappings.insert(args.moffset, Mapped { len: args.len, certain: false });
                return Err(errno);
            }
        };
        mappings.insert(args.moffset, Mapped { len: args.len, certain });
        Ok(Reply::empty())
    }

    pub(super) fn do_removemapping(&self, mut req: Request<'_>) -> OpResult {
        let window = self.window.as_ref().ok_or(Errno::NOSYS)?;
        let args: RemoveMappingIn = req.take()?;
        if args.count == 0 || args.count > REMOVEMAPPING_MAX_ENTRY {
            return Err(Errno::INVAL);
        }
        let mut ranges = Vec::with_capacity(args.count as usize);
        for _ in 0..args.count {
            let one: RemoveMappingOne = req.take()?;
            ranges.push((one.moffset, checked_end(one.moffset, one.len, window.size())?));
        }
        let mut mappings = self.mappings();
        // Every range must cover whole mappings; none is removed unless all do.
        let mut doomed = Vec::new();
        for (start, end) in ranges {
            if let Some((at, mapped)) = mappings.range(..start).next_back() {
                if at + mapped.len > start {
                    return Err(Errno::INVAL);
                }
            }
            for (at, mapped) in mappings.range(start..end) {
                if at + mapped.len > end {
                    return Err(Errno::INVAL);
                }
                doomed.push(*at);
            }
        }
        remove_each(window.as_ref(), &mut mappings, &doomed)?;
        Ok(Reply::empty())
    }

    /// Removes every mapping from the window: the guest's session ended (DESTROY, a new INIT),
    /// and what it mapped must not stay reachable or keep files open.
    pub(super) fn unmap_all(&self) {
        let Some(window) = self.window.as_ref() else { return };
        // Before the lock: a mapping that takes it after this one finds its era over.
        self.window_era.fetch_add(1, Ordering::SeqCst);
        let mut mappings = self.mappings();
        let all: Vec<u64> = mappings.keys().copied().collect();
        if let Err(errno) = remove_each(window.as_ref(), &mut mappings, &all) {
            // Those left stay on record: a mapping over them later asks for their removal
            // again, and a device reset forgets them.
            log::warn!(
                "DAX window: removing a mapping: {errno}; {} mappings stay in place",
                mappings.len()
            );
        }
    }

    /// Forgets every mapping without asking the window: the front-end dropped them (a device
    /// reset, a new connection).
    pub fn forget_mappings(&self) {
        self.window_era.fetch_add(1, Ordering::SeqCst);
        self.mappings().clear();
    }

    /// Mappings in the window now.
    pub fn mapping_count(&self) -> usize {
        self.mappings().len()
    }

    /// The mappings in the window now, as (offset, length), by offset.
    pub fn mapped_ranges(&self) -> Vec<(u64, u64)> {
        self.mappings().iter().map(|(at, mapped)| (*at, mapped.len)).collect()
    }

    fn mappings(&self) -> std::sync::MutexGuard<'_, Mappings> {
        // The record is updated before each request to the window: a panic leaves it usable.
        self.mappings.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::sync::Mutex;

    use super::*;

    /// Whether the session of the server a window serves is open, asked at each removal.
    type Gate = Box<dyn Fn() -> bool + Send + Sync>;

    /// A window whose removals all end as `answer` says, and which counts them (`asked`) and
    /// the mappings it made (`mapped`), and notes at each removal whether the session was still
    /// open (`open_at_removal`, once `gate` is set).
    struct Answering {
        answer: Result<(), WindowError>,
        asked: Mutex<u32>,
        mapped: Mutex<u32>,
        gate: std::sync::OnceLock<Gate>,
        open_at_removal: Mutex<Vec<bool>>,
    }

    impl Answering {
        fn new(answer: Result<(), WindowError>) -> Self {
            Self {
                answer,
                asked: Mutex::new(0),
                mapped: Mutex::new(0),
                gate: std::sync::OnceLock::new(),
                open_at_removal: Mutex::new(Vec::new()),
            }
        }
    }

    impl Window for Answering {
        fn size(&self) -> u64 {
            1 << 30
        }
        fn map(&self, _: OwnedFd, _: Placement) -> Result<(), WindowError> {
            *self.mapped.lock().expect("count") += 1;
            Ok(())
        }
        fn unmap(&self, _: u64, _: u64) -> Result<(), WindowError> {
            *self.asked.lock().expect("count") += 1;
            if let Some(open) = self.gate.get() {
                self.open_at_removal.lock().expect("notes").push(open());
            }
            self.answer
        }
    }

    /// The guest's answer and the record after a removal the window answers with `answer`.
    fn after_removal(
        certain: bool,
        answer: Result<(), WindowError>,
    ) -> (Result<(), Errno>, Option<Mapped>) {
        let window = Answering::new(answer);
        let mut mappings = Mappings::from([(0, Mapped { len: 4096, certain })]);
        let result = remove(&window, &mut mappings, 0);
        assert_eq!(*window.asked.lock().expect("count"), 1);
        (result, mappings.get(&0).copied())
    }

    /// A removal of several mappings ends at the first the front-end did not answer: the
    /// others are not asked for (each would wait as long), and stay on record.
    #[test]
    fn a_removal_of_several_stops_at_the_first_failure() {
        let window = Answering::new(Err(WindowError::Unknown(Errno::IO)));
        let one = Mapped { len: 4096, certain: true };
        let mut mappings = Mappings::from([(0, one), (4096, one), (8192, one)]);
        let result = remove_each(&window, &mut mappings, &[0, 4096, 8192]);
        assert_eq!(result, Err(Errno::IO));
        assert_eq!(*window.asked.lock().expect("count"), 1, "one asked for");
        assert_eq!(mappings.len(), 3, "all on record");
        let answered = Answering::new(Ok(()));
        remove_each(&answered, &mut mappings, &[0, 4096, 8192]).expect("removed");
        assert!(mappings.is_empty());
    }

    /// A SETUPMAPPING that arrived before the session ended (DESTROY on another queue emptied
    /// the window while it was on its way to the lock) maps nothing: no mapping of one session
    /// is left in the window for the next. DESTROY and INIT close the session's gate before
    /// they empty the window, which that relies on.
    #[test]
    fn a_mapping_asked_in_an_ended_session_maps_nothing() {
        use crate::fuse::abi::{EntryOut, InHeader, InitIn};
        use crate::fuse::io::VecWriter;
        use crate::fuse::{Opcode, ServerConfig};
        use crate::passthrough::{Config, PassthroughFs};
        use std::sync::Arc;
        use zerocopy::{FromBytes, IntoBytes};

        let dir = std::env::temp_dir().join(format!("vhu-dax-era-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("share");
        std::fs::write(dir.join("f"), vec![7u8; 8192]).expect("file");
        let window = Arc::new(Answering::new(Ok(())));
        let fs = PassthroughFs::new(Config::new(&dir)).expect("fs");
        let server = Arc::new(
            Server::new(fs, ServerConfig::for_queue_size(128)).with_window(window.clone()),
        );
        let weak = Arc::downgrade(&server);
        let gate: Gate =
            Box::new(move || weak.upgrade().is_some_and(|s| s.initialized.load(Ordering::SeqCst)));
        assert!(window.gate.set(gate).is_ok());
        let call = |opcode: Opcode, nodeid: u64, body: &[u8]| {
            let len = (size_of::<InHeader>() + body.len()) as u32;
            let header =
                InHeader { len, opcode: opcode as u32, unique: 1, nodeid, ..InHeader::default() };
            let request = [header.as_bytes(), body].concat();
            let mut writer = VecWriter::new(1 << 16);
            server.handle(&mut request.as_slice(), &mut writer).expect("handled");
            writer.into_bytes()
        };
        call(Opcode::Init, 0, InitIn { major: 7, minor: 38, ..InitIn::default() }.as_bytes());
        let reply = call(Opcode::Lookup, 1, b"f\0");
        let node = EntryOut::read_from_prefix(&reply[16..]).expect("entry").0.nodeid;
        let args = SetupMappingIn {
            fh: SETUPMAPPING_NO_HANDLE,
            len: 4096,
            flags: SETUPMAPPING_FLAG_READ,
            ..Default::default()
        };
        let header =
            InHeader { nodeid: node, opcode: Opcode::SetupMapping as u32, ..InHeader::default() };
        let setup = |era| {
            let req = Request::new(&header, args.as_bytes(), Default::default());
            server.setup_mapping_in(req, era).map(|_| ())
        };
        let era = server.window_era.load(Ordering::SeqCst);
        assert_eq!(setup(era), Ok(()), "mapped in its own session");
        assert_eq!((*window.mapped.lock().expect("count"), server.mapping_count()), (1, 1));
        // The session ends as DESTROY ends it, caught between its gate closing and its nodes
        // going (a request on another queue holds its node by then): a request of the old era
        // comes late, and one that began as the window was being emptied (the new era) finds
        // the session over.
        server.set_session(super::super::Session::default());
        server.unmap_all();
        assert_eq!(setup(era), Err(Errno::IO));
        assert_eq!(setup(server.window_era.load(Ordering::SeqCst)), Err(Errno::IO));
        assert_eq!(
            (*window.mapped.lock().expect("count"), server.mapping_count()),
            (1, 0),
            "not mapped"
        );
        // DESTROY, and an INIT that ends a session, close the gate before the removals.
        window.open_at_removal.lock().expect("notes").clear();
        let init = InitIn { major: 7, minor: 38, ..InitIn::default() };
        let map_f = || {
            let reply = call(Opcode::Lookup, 1, b"f\0");
            let nodeid = EntryOut::read_from_prefix(&reply[16..]).expect("entry").0.nodeid;
            let header =
                InHeader { nodeid, opcode: Opcode::SetupMapping as u32, ..InHeader::default() };
            let req = Request::new(&header, args.as_bytes(), Default::default());
            server.setup_mapping_in(req, server.window_era.load(Ordering::SeqCst)).map(|_| ())
        };
        call(Opcode::Init, 0, init.as_bytes());
        assert_eq!(map_f(), Ok(()));
        call(Opcode::Init, 0, init.as_bytes());
        assert_eq!(server.mapping_count(), 0);
        assert_eq!(map_f(), Ok(()));
        call(Opcode::Destroy, 0, &[]);
        assert_eq!(server.mapping_count(), 0);
        assert_eq!(*window.open_at_removal.lock().expect("notes"), [false, false]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_front_ends_refusal_clears_a_mapping_perhaps_in_place() {
        let perhaps = Some(Mapped { len: 4096, certain: false });
        let mapped = Some(Mapped { len: 4096, certain: true });
        let (io, notconn) = (Err(Errno::IO), Err(Errno::NOTCONN));
        // Removed, or refused by the front-end: not there.
        assert_eq!(after_removal(false, Ok(())), (Ok(()), None));
        assert_eq!(after_removal(true, Ok(())), (Ok(()), None));
        assert_eq!(after_removal(false, Err(WindowError::Refused(Errno::IO))), (Ok(()), None));
        // Never asked (stopped, no connection, no room): as it was.
        let not_asked = Err(WindowError::NotAsked(Errno::NOTCONN));
        assert_eq!(after_removal(false, not_asked), (notconn, perhaps));
        assert_eq!(after_removal(true, not_asked), (notconn, mapped));
        // Refused while surely mapped: still mapped. No answer: perhaps.
        assert_eq!(after_removal(true, Err(WindowError::Refused(Errno::IO))), (io, mapped));
        assert_eq!(after_removal(true, Err(WindowError::Unknown(Errno::IO))), (io, perhaps));
    }
}
