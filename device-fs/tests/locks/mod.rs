//! Shared helpers of the lock tests: a share with one file opened twice, lock requests
//! through the server, host-side lock attempts, and replies sent later.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub use std::os::fd::AsRawFd;
pub use std::sync::mpsc::{channel, Receiver, Sender};
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use super::support::Harness;
pub use vhu_device_fs::fuse::abi::{
    FileLock, FlushIn, InHeader, InitFlags, InterruptIn, LkIn, LkOut, OpenIn, OutHeader, ReleaseIn,
    LK_FLOCK, RELEASE_FLOCK_UNLOCK,
};
pub use vhu_device_fs::fuse::{Defer, Handled, Opcode, VecWriter, LOCK_TO_EOF};
pub use zerocopy::{FromBytes, IntoBytes};

pub const EAGAIN: i32 = 11;
pub const EINTR: i32 = 4;
pub const ENOSYS: i32 = 38;
pub const F_RDLCK: u32 = 0;
pub const F_WRLCK: u32 = 1;
pub const F_UNLCK: u32 = 2;
pub const WAIT: Duration = Duration::from_secs(5);

/// Replies sent later, as (unique, error).
pub struct Later(pub Mutex<Sender<(u64, i32)>>);

impl Defer for Later {
    fn complete(&self, unique: u64, reply: Vec<u8>) {
        let (out, _) = OutHeader::read_from_prefix(&reply).expect("out header");
        assert_eq!((out.unique, out.len as usize), (unique, reply.len()));
        let _ = self.0.lock().unwrap().send((unique, out.error));
    }
}

pub fn later() -> (Arc<dyn Defer>, Receiver<(u64, i32)>) {
    let (tx, rx) = channel();
    (Arc::new(Later(Mutex::new(tx))), rx)
}

/// [`Later`] with room for one request answered later at a time.
pub struct RoomForOne(pub Later, pub Mutex<bool>);

impl Defer for RoomForOne {
    fn complete(&self, unique: u64, reply: Vec<u8>) {
        self.unhold();
        self.0.complete(unique, reply);
    }
    fn hold(&self) -> bool {
        !std::mem::replace(&mut *self.1.lock().unwrap(), true)
    }
    fn unhold(&self) {
        *self.1.lock().unwrap() = false;
    }
}

/// A share with `f` (4 KiB), looked up and opened twice (two guest open files).
pub fn setup(tag: &str) -> (Harness, u64, u64, u64) {
    let mut h = Harness::new(tag);
    let out = h.init();
    let claimed = InitFlags::from_bits_retain(u64::from(out.flags));
    assert!(claimed.contains(InitFlags::POSIX_LOCKS | InitFlags::FLOCK_LOCKS), "{claimed:?}");
    std::fs::write(h.share().join("f"), vec![0u8; 4096]).expect("host write");
    let node = h.lookup(1, "f").entry().nodeid;
    let open = |h: &mut Harness| {
        h.call(Opcode::Open, node, OpenIn { flags: 0o2, ..OpenIn::default() }.as_bytes()).open().fh
    };
    let (a, b) = (open(&mut h), open(&mut h));
    (h, node, a, b)
}

pub fn lk(fh: u64, owner: u64, typ: u32, start: u64, end: u64, flock: bool) -> LkIn {
    let lk = FileLock { start, end, typ, pid: 42 };
    LkIn { fh, owner, lk, lk_flags: if flock { LK_FLOCK } else { 0 }, padding: 0 }
}

pub fn setlk(h: &mut Harness, node: u64, args: &LkIn) -> i32 {
    h.call(Opcode::Setlk, node, args.as_bytes()).errno()
}

pub fn getlk(h: &mut Harness, node: u64, args: &LkIn) -> FileLock {
    LkOut::read_from_bytes(h.call(Opcode::Getlk, node, args.as_bytes()).ok()).expect("lk_out").lk
}

/// A host process's view: a description of its own on the file.
pub fn host_file(h: &Harness) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(h.share().join("f")).expect("open")
}

/// Tries an OFD write lock on `start..=end` from the host; returns whether it was granted.
pub fn host_try_posix(file: &std::fs::File, typ: i16, start: i64, len: i64) -> bool {
    let mut fl = libc::flock { l_type: typ, l_whence: 0, l_start: start, l_len: len, l_pid: 0 };
    // SAFETY: F_OFD_SETLK reads one struct flock, `fl`; the file is open.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) == 0 }
}

/// Waits, up to [`WAIT`], until another open file holds a POSIX lock over `start..start+len`
/// (F_OFD_GETLK through `file`, which takes nothing); says whether one does.
pub fn host_sees_posix_lock(file: &std::fs::File, start: i64, len: i64) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let typ = libc::F_WRLCK as i16;
        let mut fl = libc::flock { l_type: typ, l_whence: 0, l_start: start, l_len: len, l_pid: 0 };
        // SAFETY: F_OFD_GETLK reads and writes one struct flock, `fl`; the file is open.
        let asked = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if asked == 0 && fl.l_type != libc::F_UNLCK as i16 {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

pub fn host_try_flock(file: &std::fs::File) -> bool {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Sends SETLKW through `handle_with`; returns what the server did.
pub fn setlkw(
    h: &mut Harness,
    node: u64,
    args: &LkIn,
    defer: &Arc<dyn Defer>,
    unique: u64,
) -> Handled {
    setlkw_answer(h, node, args, defer, unique).0
}

/// [`setlkw`], with the error of an answer given at once (0 when none was).
pub fn setlkw_answer(
    h: &mut Harness,
    node: u64,
    args: &LkIn,
    defer: &Arc<dyn Defer>,
    unique: u64,
) -> (Handled, i32) {
    let header = InHeader {
        len: (size_of::<InHeader>() + size_of::<LkIn>()) as u32,
        opcode: Opcode::Setlkw as u32,
        unique,
        nodeid: node,
        pid: 1,
        ..InHeader::default()
    };
    let request = [header.as_bytes(), args.as_bytes()].concat();
    let mut writer = VecWriter::new(4096);
    let handled =
        h.server.handle_with(&mut &request[..], &mut writer, Some(defer)).expect("handled");
    let error = OutHeader::read_from_prefix(writer.bytes()).map_or(0, |(out, _)| out.error);
    (handled, error)
}
