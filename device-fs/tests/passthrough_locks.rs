//! Guest locks on the host: POSIX locks as open-file-description locks keyed by the FUSE lock
//! owner, flock locks as flock(2). Host and guest see each other's locks; FLUSH and RELEASE
//! drop an owner's locks; a SETLKW whose lock is held is answered later, without blocking the
//! caller, and an INTERRUPT, a RELEASE or the end of the session answers it EINTR.

mod support;

mod locks;

use locks::*;

#[test]
fn posix_locks_are_shared_with_the_host_and_between_owners() {
    let (mut h, node, a, b) = setup("locks-posix");
    assert_eq!(setlk(&mut h, node, &lk(a, 1, F_WRLCK, 100, 199, false)), 0);
    // Another guest owner sees it and cannot take it.
    let mut asking = lk(b, 2, F_WRLCK, 0, LOCK_TO_EOF, false);
    asking.lk.pid = 7;
    let seen = getlk(&mut h, node, &asking);
    assert_eq!((seen.typ, seen.start, seen.end), (F_WRLCK, 100, 199));
    assert_eq!(seen.pid, 42, "the guest process that holds it (not the one asking)");
    assert_eq!(setlk(&mut h, node, &lk(b, 2, F_RDLCK, 150, 150, false)), EAGAIN);
    assert_eq!(setlk(&mut h, node, &lk(b, 2, F_WRLCK, 200, 299, false)), 0, "no overlap");
    // The owner itself sees nothing of its own in its way, even through its other open file.
    let own = getlk(&mut h, node, &lk(b, 1, F_WRLCK, 100, 199, false));
    assert_eq!((own.typ, own.start, own.end), (F_UNLCK, 100, 199));
    // The host sees both owners' locks.
    let host = host_file(&h);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 120, 1));
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 250, 1));
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 1000, 10), "unlocked range");
    // And the guest sees the host's.
    let seen = getlk(&mut h, node, &lk(a, 1, F_RDLCK, 1005, 1005, false));
    assert_eq!((seen.typ, seen.start, seen.end, seen.pid), (F_WRLCK, 1000, 1009, 0));
    assert_eq!(setlk(&mut h, node, &lk(a, 1, F_WRLCK, 1000, 1000, false)), EAGAIN);
    // Unlocking part of a range splits it, as POSIX says.
    assert_eq!(setlk(&mut h, node, &lk(a, 1, F_UNLCK, 100, 149, false)), 0);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 100, 50));
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 150, 1));
    // FLUSH by owner 1 (a close in that guest process) drops its locks; owner 2 keeps its own.
    let f = FlushIn { fh: a, lock_owner: 1, ..FlushIn::default() };
    h.call(Opcode::Flush, node, f.as_bytes()).ok();
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 150, 50));
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 250, 1));
}

#[test]
fn flock_locks_are_shared_with_the_host_and_dropped_on_release() {
    let (mut h, node, a, b) = setup("locks-flock");
    assert_eq!(setlk(&mut h, node, &lk(a, 11, F_WRLCK, 0, LOCK_TO_EOF, true)), 0);
    assert_eq!(setlk(&mut h, node, &lk(b, 12, F_RDLCK, 0, LOCK_TO_EOF, true)), EAGAIN);
    let host = host_file(&h);
    assert!(!host_try_flock(&host), "the host sees the guest's flock");
    let r = ReleaseIn {
        fh: a,
        release_flags: RELEASE_FLOCK_UNLOCK,
        lock_owner: 11,
        ..ReleaseIn::default()
    };
    h.call(Opcode::Release, node, r.as_bytes()).ok();
    assert!(host_try_flock(&host), "released with the open file");
    // Now the host holds it: the guest cannot.
    assert_eq!(setlk(&mut h, node, &lk(b, 12, F_RDLCK, 0, LOCK_TO_EOF, true)), EAGAIN);
    drop(host);
    assert_eq!(setlk(&mut h, node, &lk(b, 12, F_RDLCK, 0, LOCK_TO_EOF, true)), 0);
}

/// A guest OFD lock (`F_OFD_SETLK`: its owner is the guest's open file) is never unlocked or
/// flushed by Linux at close: the RELEASE of its open file drops it. A process's POSIX lock
/// asked through two open files stays until that process's FLUSH.
#[test]
fn an_open_files_own_locks_go_with_its_release() {
    let (mut h, node, a, b) = setup("locks-ofd-release");
    const OPEN_FILE: u64 = 0xF11E;
    const PROCESS: u64 = 0x9001;
    assert_eq!(setlk(&mut h, node, &lk(a, OPEN_FILE, F_WRLCK, 0, 99, false)), 0);
    assert_eq!(setlk(&mut h, node, &lk(a, PROCESS, F_WRLCK, 200, 299, false)), 0);
    assert_eq!(setlk(&mut h, node, &lk(b, PROCESS, F_WRLCK, 300, 399, false)), 0);
    let host = host_file(&h);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 1));
    let r = ReleaseIn { fh: a, ..ReleaseIn::default() };
    h.call(Opcode::Release, node, r.as_bytes()).ok();
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 100), "released with its open file");
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 250, 1), "the process's lock stays");
    let f = FlushIn { fh: b, lock_owner: PROCESS, ..FlushIn::default() };
    h.call(Opcode::Flush, node, f.as_bytes()).ok();
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 200, 200), "flushed by its process");
}

/// A RELEASE or FLUSH naming a handle that is not the node's is refused before it touches a
/// lock: the owner's locks stay.
#[test]
fn a_release_or_flush_of_a_wrong_handle_leaves_the_locks() {
    let (mut h, node, a, _) = setup("locks-wrong-handle");
    const OWNER: u64 = 0x9002;
    assert_eq!(setlk(&mut h, node, &lk(a, OWNER, F_WRLCK, 0, 99, false)), 0);
    let host = host_file(&h);
    let f = FlushIn { fh: a + 1000, lock_owner: OWNER, ..FlushIn::default() };
    assert_eq!(h.call(Opcode::Flush, node, f.as_bytes()).errno(), libc::EBADF);
    let flags = vhu_device_fs::fuse::abi::RELEASE_FLUSH;
    let r =
        ReleaseIn { fh: a + 1000, lock_owner: OWNER, release_flags: flags, ..Default::default() };
    assert_eq!(h.call(Opcode::Release, node, r.as_bytes()).errno(), libc::EBADF);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 1), "the owner's lock is held");
}

#[test]
fn setlkw_is_answered_when_the_host_lets_go() {
    let (mut h, node, a, _) = setup("locks-wait");
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 0));
    // The call returns at once: the reply is owed.
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 1, F_WRLCK, 0, 9, false), &defer, 500),
        Handled::Deferred(500)
    );
    assert!(replies.recv_timeout(Duration::from_millis(100)).is_err(), "still held");
    // Meanwhile the server goes on serving.
    assert_eq!(setlk(&mut h, node, &lk(a, 2, F_RDLCK, 0, 0, false)), EAGAIN);
    drop(host);
    assert_eq!(replies.recv_timeout(WAIT), Ok((500, 0)), "granted once the host let go");
    let host = host_file(&h);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 1), "and the guest holds it");
    // A free lock is answered at once even through SETLKW.
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 1, F_WRLCK, 20, 29, false), &defer, 501),
        Handled::Replied(16)
    );
}

/// Two guest owners each holding what the other waits for: the second SETLKW, which would
/// close the cycle, is answered EDEADLK at once (as Linux answers local POSIX locks); the first
/// still waits, and gets its lock once the other lets go.
#[test]
fn a_setlkw_that_would_wait_for_itself_is_a_deadlock() {
    const EDEADLK: i32 = 35;
    let (mut h, node, a, b) = setup("locks-deadlock");
    let (defer, replies) = later();
    assert_eq!(setlk(&mut h, node, &lk(a, 1, F_WRLCK, 0, 0, false)), 0);
    assert_eq!(setlk(&mut h, node, &lk(b, 2, F_WRLCK, 1, 1, false)), 0);
    // A third owner sharing nothing with them waits without a cycle.
    assert_eq!(setlk(&mut h, node, &lk(b, 3, F_RDLCK, 5, 5, false)), 0);
    let (waits, _) = setlkw_answer(&mut h, node, &lk(a, 1, F_WRLCK, 1, 1, false), &defer, 700);
    assert_eq!(waits, Handled::Deferred(700));
    let (third, _) = setlkw_answer(&mut h, node, &lk(b, 3, F_WRLCK, 0, 0, false), &defer, 701);
    assert_eq!(third, Handled::Deferred(701), "owner 3 waits for owner 1, which waits for 2");
    let (closes, error) = setlkw_answer(&mut h, node, &lk(b, 2, F_WRLCK, 0, 0, false), &defer, 702);
    assert!(matches!(closes, Handled::Replied(_)), "{closes:?}");
    assert_eq!(error, -EDEADLK);
    assert!(replies.recv_timeout(Duration::from_millis(100)).is_err(), "both still wait");
    // Owner 2 lets go: owner 1 gets the byte it waited for.
    assert_eq!(setlk(&mut h, node, &lk(b, 2, F_UNLCK, 1, 1, false)), 0);
    assert_eq!(replies.recv_timeout(WAIT), Ok((700, 0)));
}

#[test]
fn setlkw_waits_end_with_eintr() {
    let (mut h, node, a, b) = setup("locks-cancel");
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_flock(&host));
    // INTERRUPT names the waiting request.
    assert!(matches!(
        setlkw(&mut h, node, &lk(a, 1, F_WRLCK, 0, LOCK_TO_EOF, true), &defer, 600),
        Handled::Deferred(600)
    ));
    let i = InterruptIn { unique: 600 };
    assert!(h.try_call(Opcode::Interrupt, 0, i.as_bytes()).is_none(), "INTERRUPT gets no reply");
    assert_eq!(replies.recv_timeout(WAIT), Ok((600, -EINTR)));
    // RELEASE of the handle it waits through.
    assert!(matches!(
        setlkw(&mut h, node, &lk(b, 2, F_WRLCK, 0, LOCK_TO_EOF, true), &defer, 601),
        Handled::Deferred(601)
    ));
    h.call(Opcode::Release, node, ReleaseIn { fh: b, ..ReleaseIn::default() }.as_bytes()).ok();
    assert_eq!(replies.recv_timeout(WAIT), Ok((601, -EINTR)));
    // The end of the session (device reset, front-end gone).
    assert!(matches!(
        setlkw(&mut h, node, &lk(a, 3, F_WRLCK, 0, LOCK_TO_EOF, true), &defer, 602),
        Handled::Deferred(602)
    ));
    h.server.reset();
    assert_eq!(replies.recv_timeout(WAIT), Ok((602, -EINTR)));
    assert!(host_try_flock(&host), "the host still holds its lock");
}

/// An INTERRUPT that overtakes its SETLKW (it came on another queue) is not lost: the SETLKW
/// arrives already interrupted and its wait answers EINTR.
#[test]
fn an_interrupt_ahead_of_its_setlkw_still_interrupts_it() {
    let (mut h, node, a, b) = setup("locks-early");
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_flock(&host));
    let i = InterruptIn { unique: 800 };
    assert!(h.try_call(Opcode::Interrupt, 0, i.as_bytes()).is_none(), "INTERRUPT gets no reply");
    let args = lk(a, 1, F_WRLCK, 0, LOCK_TO_EOF, true);
    assert!(matches!(setlkw(&mut h, node, &args, &defer, 800), Handled::Deferred(800)));
    assert_eq!(replies.recv_timeout(WAIT), Ok((800, -EINTR)));
    // Remembered once: the same unique later waits as any other request.
    let args = lk(b, 2, F_WRLCK, 0, LOCK_TO_EOF, true);
    assert!(matches!(setlkw(&mut h, node, &args, &defer, 800), Handled::Deferred(800)));
    assert!(replies.recv_timeout(Duration::from_millis(100)).is_err(), "still waiting");
    h.server.cancel(800);
    assert_eq!(replies.recv_timeout(WAIT), Ok((800, -EINTR)));
}

/// A ring that stops cancels its waits and answers their chains at once: when
/// `cancel_and_settle` returns, every cancelled wait has posted its outcome, so none is told
/// EINTR in its place while the real answer (a lock taken just before the cancel) comes later.
#[test]
fn settled_waits_have_posted_their_outcome() {
    let (mut h, node, a, b) = setup("locks-settle");
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_flock(&host));
    for (unique, fh, owner) in [(700, a, 1), (701, b, 2)] {
        let args = lk(fh, owner, F_WRLCK, 0, LOCK_TO_EOF, true);
        assert!(matches!(setlkw(&mut h, node, &args, &defer, unique), Handled::Deferred(_)));
    }
    // Let both waiters back off to their longest pause between attempts.
    std::thread::sleep(Duration::from_millis(100));
    h.server.cancel_and_settle(&[700, 701]);
    let mut outcomes: Vec<_> = replies.try_iter().collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, [(700, -EINTR), (701, -EINTR)], "posted before the call returned");
    assert!(host_try_flock(&host), "the host still holds its lock");
}

/// [`Later`], posting each reply only after a pause: a wait that ended is on its way out.
struct SlowLater(Later);

impl Defer for SlowLater {
    fn complete(&self, unique: u64, reply: Vec<u8>) {
        std::thread::sleep(Duration::from_millis(300));
        self.0.complete(unique, reply);
    }
}

/// A wait that took its lock and is posting the reply when the queue stops is settled as one
/// still waiting: `cancel_and_settle` returns once the grant is posted, so the stop does not
/// answer the chain EINTR for a lock its owner holds (the grant then lost).
#[test]
fn a_wait_posting_its_grant_is_settled_with_it() {
    let (mut h, node, a, _) = setup("locks-settle-grant");
    let (tx, replies) = channel();
    let defer: Arc<dyn Defer> = Arc::new(SlowLater(Later(Mutex::new(tx))));
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 0));
    let args = lk(a, 1, F_WRLCK, 0, 9, false);
    assert_eq!(setlkw(&mut h, node, &args, &defer, 900), Handled::Deferred(900));
    drop(host);
    // The waiter takes the lock within its next attempt, then pauses posting the grant.
    assert!(host_sees_posix_lock(&host_file(&h), 0, 10), "the waiter took the lock");
    h.server.cancel_and_settle(&[900]);
    assert_eq!(replies.try_recv(), Ok((900, 0)), "the grant was posted before the call returned");
}

/// An INTERRUPT of a wait that took its lock and is posting the grant cancels nothing, and is
/// not kept for a later request under the same unique (which waits as any other).
#[test]
fn an_interrupt_of_a_wait_posting_its_grant_is_not_kept() {
    let (mut h, node, a, b) = setup("locks-interrupt-grant");
    let (tx, replies) = channel();
    let slow: Arc<dyn Defer> = Arc::new(SlowLater(Later(Mutex::new(tx))));
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 0));
    let args = lk(a, 1, F_WRLCK, 0, 9, false);
    assert_eq!(setlkw(&mut h, node, &args, &slow, 901), Handled::Deferred(901));
    drop(host);
    assert!(host_sees_posix_lock(&host_file(&h), 0, 10), "the waiter took the lock");
    // Well inside the pause before the grant is posted: the wait has left the table.
    std::thread::sleep(Duration::from_millis(50));
    let i = InterruptIn { unique: 901 };
    assert!(h.try_call(Opcode::Interrupt, 0, i.as_bytes()).is_none(), "INTERRUPT gets no reply");
    assert_eq!(replies.recv_timeout(WAIT), Ok((901, 0)), "the grant");
    let (defer, replies) = later();
    let args = lk(b, 2, F_WRLCK, 0, 9, false);
    assert_eq!(setlkw(&mut h, node, &args, &defer, 901), Handled::Deferred(901));
    assert!(replies.recv_timeout(Duration::from_millis(100)).is_err(), "it waits");
    h.server.cancel(901);
    assert_eq!(replies.recv_timeout(WAIT), Ok((901, -EINTR)));
}

#[test]
fn locks_can_be_turned_off() {
    let mut h = Harness::with("locks-off", |c| {
        c.posix_locks = false;
        c.flock = false;
    });
    let out = h.init();
    let claimed = InitFlags::from_bits_retain(u64::from(out.flags));
    assert!(!claimed.intersects(InitFlags::POSIX_LOCKS | InitFlags::FLOCK_LOCKS));
    std::fs::write(h.share().join("f"), b"f").expect("host write");
    let node = h.lookup(1, "f").entry().nodeid;
    let fh = h.call(Opcode::Open, node, OpenIn::default().as_bytes()).open().fh;
    assert_eq!(setlk(&mut h, node, &lk(fh, 1, F_WRLCK, 0, 0, false)), ENOSYS);
    assert_eq!(
        h.call(Opcode::Getlk, node, lk(fh, 1, F_WRLCK, 0, 0, false).as_bytes()).errno(),
        ENOSYS
    );
}

/// A close(2) in another thread of the guest process (FLUSH by the same owner) drops the
/// owner's locks but does not interrupt its blocked F_SETLKW; a guest reusing the unique of a
/// request still waiting is refused.
#[test]
fn flush_leaves_a_waiting_setlkw_waiting() {
    let (mut h, node, a, _) = setup("locks-flush-wait");
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 10));
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 7, F_WRLCK, 0, 9, false), &defer, 700),
        Handled::Deferred(700)
    );
    let f = FlushIn { fh: a, lock_owner: 7, ..FlushIn::default() };
    h.call(Opcode::Flush, node, f.as_bytes()).ok();
    assert!(replies.recv_timeout(Duration::from_millis(200)).is_err(), "still waiting");
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 8, F_WRLCK, 0, 9, false), &defer, 700),
        Handled::Replied(16),
        "the unique of a waiting request is refused at once"
    );
    drop(host);
    assert_eq!(replies.recv_timeout(WAIT), Ok((700, 0)), "granted once the host let go");
    let host = host_file(&h);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 1), "and held by the guest");
}

/// A SETLK that reuses the unique of a SETLKW still waiting (no Linux guest does) is answered
/// as any SETLK and leaves the waiting request as it was: an INTERRUPT still ends it.
#[test]
fn a_setlk_reusing_a_waiting_unique_leaves_the_wait_alone() {
    let (mut h, node, a, b) = setup("locks-reused-unique");
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 10));
    let args = lk(a, 7, F_WRLCK, 0, 9, false);
    assert_eq!(setlkw(&mut h, node, &args, &defer, 700), Handled::Deferred(700));
    let header = InHeader {
        len: (size_of::<InHeader>() + size_of::<LkIn>()) as u32,
        opcode: Opcode::Setlk as u32,
        unique: 700,
        nodeid: node,
        pid: 1,
        ..InHeader::default()
    };
    let other = lk(b, 8, F_WRLCK, 20, 29, false);
    let request = [header.as_bytes(), other.as_bytes()].concat();
    let mut writer = VecWriter::new(4096);
    h.server.handle_with(&mut &request[..], &mut writer, Some(&defer)).expect("handled");
    let (out, _) = OutHeader::read_from_prefix(writer.bytes()).expect("answered at once");
    assert_eq!((out.unique, out.error), (700, 0), "the other range was free");
    let i = InterruptIn { unique: 700 };
    assert!(h.try_call(Opcode::Interrupt, 0, i.as_bytes()).is_none(), "INTERRUPT gets no reply");
    assert_eq!(replies.recv_timeout(WAIT), Ok((700, -EINTR)), "the wait was still known");
}

/// A write lock on an append-only file (`chattr +a`), which may only be opened for writing to
/// append, is taken as on any other: the owner's host description is opened for appending.
#[test]
fn an_append_only_file_takes_write_locks() {
    const FS_APPEND_FL: libc::c_long = 0x20;
    let (mut h, node, a, _) = setup("locks-append-only");
    let file = std::fs::File::open(h.share().join("f")).expect("open");
    let flags: libc::c_long = FS_APPEND_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one long, `flags`; the file is open.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        // Needs CAP_LINUX_IMMUTABLE and a host file system with the flag (CI's has both).
        assert!(std::env::var_os("CI").is_none(), "{}", std::io::Error::last_os_error());
        return;
    }
    let result = setlk(&mut h, node, &lk(a, 1, F_WRLCK, 0, 9, false));
    let none: libc::c_long = 0;
    // SAFETY: as above; the flag goes so the share can be removed.
    unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &none) };
    assert_eq!(result, 0, "the write lock is granted");
    let host = host_file(&h);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 1), "and held on the host");
}

/// An INTERRUPT that came before its request is remembered for that request only within its
/// session: after DESTROY and a new INIT, which number requests afresh, a SETLKW that happens
/// to reuse the number waits as any other.
#[test]
fn an_early_interrupt_does_not_outlive_its_session() {
    let (mut h, _, _, _) = setup("locks-early-interrupt-session");
    let (defer, replies) = later();
    let i = InterruptIn { unique: 900 };
    assert!(h.try_call(Opcode::Interrupt, 0, i.as_bytes()).is_none());
    h.call(Opcode::Destroy, 1, &[]).ok();
    h.init();
    let node = h.lookup(1, "f").entry().nodeid;
    let open = OpenIn { flags: 0o2, ..OpenIn::default() };
    let fh = h.call(Opcode::Open, node, open.as_bytes()).open().fh;
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 1));
    assert_eq!(
        setlkw(&mut h, node, &lk(fh, 1, F_WRLCK, 0, 0, false), &defer, 900),
        Handled::Deferred(900)
    );
    assert!(replies.recv_timeout(Duration::from_millis(200)).is_err(), "it waits");
    drop(host);
    assert_eq!(replies.recv_timeout(WAIT), Ok((900, 0)));
}

/// The access modes (`O_ACCMODE` of fdinfo's `flags`) of this process's descriptions of
/// `path` that hold an OFD lock or a flock lock (fdinfo lists a `lock:` line for them).
fn locking_descriptions(path: &std::path::Path) -> Vec<u32> {
    let mut modes = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("fd dir").flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info = entry.file_name().into_string().expect("fd number");
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{info}")) else {
            continue;
        };
        if !info.lines().any(|l| l.starts_with("lock:")) {
            continue;
        }
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).expect("flags line");
        modes.push(u32::from_str_radix(flags.trim(), 8).expect("octal flags") & 0o3);
    }
    modes
}

/// A guest that may only read a file never gets the daemon to open it for writing: locks asked
/// through a read-only handle, and flock locks, are held on a read-only description (the host
/// would see a writable one: a close-write event, a broken lease, ETXTBSY for whoever executes
/// the file). An owner that later asks a write lock through a writable handle gets a writable
/// description that keeps what it held, with no moment where a host process could take it.
#[test]
fn locks_take_no_more_access_than_the_guests_handle() {
    let (mut h, node, rw, _) = setup("lock-access");
    let path = h.share().join("f").canonicalize().expect("path");
    let ro = h.call(Opcode::Open, node, OpenIn { flags: 0, ..OpenIn::default() }.as_bytes());
    let ro = ro.open().fh;
    const O_RDONLY: u32 = 0;
    const O_RDWR: u32 = 2;

    assert_eq!(setlk(&mut h, node, &lk(ro, 7, F_RDLCK, 0, 9, false)), 0);
    assert_eq!(locking_descriptions(&path), [O_RDONLY], "a read lock through a read-only handle");
    let host = host_file(&h);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 10), "the read lock is on the host");

    // The same owner write-locks through its writable handle: the description becomes writable
    // and still holds bytes 0..=9.
    assert_eq!(setlk(&mut h, node, &lk(rw, 7, F_WRLCK, 100, 199, false)), 0);
    assert_eq!(locking_descriptions(&path), [O_RDWR]);
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 10), "the read lock was kept");
    assert!(host_try_posix(&host, libc::F_RDLCK as i16, 0, 10), "as a read lock");
    assert!(!host_try_posix(&host, libc::F_RDLCK as i16, 100, 100), "the write lock is held");
    assert!(host_try_posix(&host, libc::F_UNLCK as i16, 0, 10));

    // A flock lock needs no write access, whatever the handle.
    assert_eq!(setlk(&mut h, node, &lk(rw, 9, F_WRLCK, 0, LOCK_TO_EOF, true)), 0);
    let mut modes = locking_descriptions(&path);
    modes.sort_unstable();
    assert_eq!(modes, [O_RDONLY, O_RDWR], "the flock lock's description is read-only");
}

/// An owner whose read-only description gets a write lock while a SETLKW of its own waits (two
/// threads of one guest process): the write lock is granted, not refused, and the wait, once
/// the host lets go, takes its lock on the owner's writable description — the one that stays.
#[test]
fn a_waiting_setlkw_follows_its_owners_description_when_it_becomes_writable() {
    let (mut h, node, rw, _) = setup("lock-upgrade-wait");
    let ro = h.call(Opcode::Open, node, OpenIn { flags: 0, ..OpenIn::default() }.as_bytes());
    let ro = ro.open().fh;
    let (defer, replies) = later();
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 10), "the host holds 0..=9");
    // Owner 7 waits for a read lock on 0..=9 through its read-only handle.
    assert_eq!(
        setlkw(&mut h, node, &lk(ro, 7, F_RDLCK, 0, 9, false), &defer, 600),
        Handled::Deferred(600)
    );
    // Meanwhile it write-locks 100..=199 through its writable handle.
    assert_eq!(setlk(&mut h, node, &lk(rw, 7, F_WRLCK, 100, 199, false)), 0);
    assert!(!host_try_posix(&host, libc::F_RDLCK as i16, 100, 100), "the write lock is held");
    // The host lets go: the wait is granted, on the description that holds the write lock.
    assert!(host_try_posix(&host, libc::F_UNLCK as i16, 0, 10));
    assert_eq!(replies.recv_timeout(WAIT), Ok((600, 0)));
    assert!(!host_try_posix(&host, libc::F_WRLCK as i16, 0, 10), "the read lock is held");
    assert!(!host_try_posix(&host, libc::F_RDLCK as i16, 100, 100), "and still the write lock");
    // Everything goes with the owner's FLUSH: nothing stays on a description nobody records.
    let flush = FlushIn { fh: rw, lock_owner: 7, ..FlushIn::default() };
    assert_eq!(h.call(Opcode::Flush, node, flush.as_bytes()).errno(), 0);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 200), "nothing is left held");
}

/// A flock upgrade that fails leaves its owner holding nothing, on the host (flock(2)) and in
/// the daemon's record: once the other owner lets go, nothing is held and a migration saves.
#[test]
fn a_failed_flock_upgrade_holds_nothing_afterwards() {
    let (mut h, node, a, b) = setup("flock-upgrade");
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 0, 0, true)), 0);
    assert_eq!(setlk(&mut h, node, &lk(b, 8, F_RDLCK, 0, 0, true)), 0);
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_WRLCK, 0, 0, true)), EAGAIN, "8 shares it");
    assert_eq!(setlk(&mut h, node, &lk(b, 8, F_UNLCK, 0, 0, true)), 0);
    vhu_device_fs::device::state::save(&h.server).expect("nothing is locked: the state saves");
    assert_eq!(setlk(&mut h, node, &lk(b, 8, F_WRLCK, 0, 0, true)), 0, "7 holds nothing");
}
