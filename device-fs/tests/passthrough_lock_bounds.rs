//! Bounds on what a guest's locks may make the host keep: an owner holds at most 1 024 byte
//! ranges apart (a lock, an unlock that splits a range and a granted wait past it answer
//! ENOLCK), and a queue holds at most the lock waits its ring leaves room for.

mod locks;
mod support;

use locks::*;

/// A SETLKW that would wait where its queue has no room left for another wait (the ring must
/// keep room for the unlocks that end them) is refused with ENOLCK, while one that does not
/// wait is answered as ever; a wait that ends, or a SETLKW answered at once, gives its room
/// back.
#[test]
fn setlkw_waits_take_only_the_room_their_queue_has() {
    const ENOLCK: i32 = 37;
    let (mut h, node, a, b) = setup("locks-room");
    let (tx, replies) = channel();
    let defer: Arc<dyn Defer> = Arc::new(RoomForOne(Later(Mutex::new(tx)), Mutex::new(false)));
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 0, 100));
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 1, F_WRLCK, 0, 9, false), &defer, 700),
        Handled::Deferred(700)
    );
    let refused = setlkw_answer(&mut h, node, &lk(b, 2, F_WRLCK, 0, 9, false), &defer, 701);
    assert_eq!(refused, (Handled::Replied(16), -ENOLCK), "no room for a second wait");
    // What does not wait needs no room: a free POSIX lock (the host holds bytes 0-99), and an
    // unlock (Linux sends one as SETLKW when the caller used the blocking form).
    let free = setlkw_answer(&mut h, node, &lk(b, 3, F_WRLCK, 200, 209, false), &defer, 704);
    assert_eq!(free, (Handled::Replied(16), 0), "a free lock is granted");
    let unlock = setlkw_answer(&mut h, node, &lk(b, 3, F_UNLCK, 200, 209, false), &defer, 705);
    assert_eq!(unlock, (Handled::Replied(16), 0), "an unlock is done");
    let unlock = setlkw_answer(&mut h, node, &lk(b, 3, F_UNLCK, 0, 0, true), &defer, 707);
    assert_eq!(unlock, (Handled::Replied(16), 0), "a flock unlock is done");
    // A flock upgrade that finds no room keeps the shared lock it had (flock(2) lets go of it
    // before it converts, so the room is looked at first).
    assert_eq!(setlk(&mut h, node, &lk(a, 5, F_RDLCK, 0, 0, true)), 0);
    assert_eq!(setlk(&mut h, node, &lk(b, 6, F_RDLCK, 0, 0, true)), 0);
    let upgrade = setlkw_answer(&mut h, node, &lk(a, 5, F_WRLCK, 0, 0, true), &defer, 706);
    assert_eq!(upgrade, (Handled::Replied(16), -ENOLCK), "no room to wait for the upgrade");
    assert_eq!(setlk(&mut h, node, &lk(b, 6, F_UNLCK, 0, 0, true)), 0);
    assert!(!host_try_flock(&host_file(&h)), "owner 5 still holds its shared lock");
    assert_eq!(setlk(&mut h, node, &lk(a, 5, F_UNLCK, 0, 0, true)), 0);
    drop(host);
    assert_eq!(replies.recv_timeout(WAIT), Ok((700, 0)), "the first wait ends");
    // Answered at once: the room is given back.
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 1, F_WRLCK, 20, 29, false), &defer, 702),
        Handled::Replied(16)
    );
    // Owner 1 holds 0..=9: owner 2 waits again, in the room the first wait gave back.
    assert_eq!(
        setlkw(&mut h, node, &lk(b, 2, F_WRLCK, 0, 9, false), &defer, 703),
        Handled::Deferred(703)
    );
    assert_eq!(setlk(&mut h, node, &lk(a, 1, F_UNLCK, 0, 9, false)), 0);
    assert_eq!(replies.recv_timeout(WAIT), Ok((703, 0)));
}

/// One owner holds at most 1 024 byte ranges apart: one more is refused with ENOLCK instead
/// of making the host kernel keep lock records without end; a lock that takes no new range
/// apart (changing a held one, joining two) is still granted.
#[test]
fn an_owner_holds_a_bounded_number_of_ranges() {
    const ENOLCK: i32 = 37;
    let (mut h, node, a, _) = setup("lock-ranges");
    for i in 0..1024u64 {
        assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 2 * i, 2 * i, false)), 0, "{i}");
    }
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 4096, 4096, false)), ENOLCK);
    // The host holds nothing there: another owner may write-lock it.
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_WRLCK, 4096, 4096, false)), 0);
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_WRLCK, 0, 0, false)), 0, "a held range changes");
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 2, 4, false)), 0, "two ranges join");
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 4097, 4097, false)), 0, "one freed");
}

/// The bound holds when a waiting SETLKW is granted too: the owner may have taken ranges of
/// its own meanwhile, and the wait then ends with ENOLCK instead of taking one range more.
#[test]
fn a_granted_setlkw_keeps_the_bound_on_ranges() {
    const ENOLCK: i32 = 37;
    let (mut h, node, a, _) = setup("lock-ranges-wait");
    let (defer, replies) = later();
    for i in 0..1023u64 {
        assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 2 * i, 2 * i, false)), 0, "{i}");
    }
    let host = host_file(&h);
    assert!(host_try_posix(&host, libc::F_WRLCK as i16, 5000, 1));
    assert_eq!(
        setlkw(&mut h, node, &lk(a, 7, F_RDLCK, 5000, 5000, false), &defer, 600),
        Handled::Deferred(600)
    );
    // The 1 024th range, taken while the wait waits.
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_RDLCK, 4000, 4000, false)), 0);
    drop(host);
    assert_eq!(replies.recv_timeout(WAIT), Ok((600, -ENOLCK)));
    // Nothing was taken at 5000.
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_WRLCK, 5000, 5000, false)), 0);
}

/// A region locked piece by piece, as a database locks each record it appends, is one lock
/// (the host kernel joins touching locks of one type, and so does the owner's record): it
/// never reaches the bound on ranges apart, and unlocking a piece inside it splits it once.
#[test]
fn a_region_locked_piece_by_piece_is_one_lock() {
    const F_UNLCK: u32 = 2;
    let (mut h, node, a, _) = setup("lock-pieces");
    for i in 0..3000u64 {
        assert_eq!(setlk(&mut h, node, &lk(a, 7, F_WRLCK, 100 * i, 100 * i + 99, false)), 0, "{i}");
    }
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_RDLCK, 299_999, 299_999, false)), EAGAIN);
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_UNLCK, 1000, 1099, false)), 0, "a piece inside");
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_RDLCK, 1000, 1099, false)), 0, "unlocked");
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_RDLCK, 999, 999, false)), EAGAIN, "still held");
}

/// The bound holds for unlocks too: unlocking a byte inside a held range splits it in two, so
/// a guest unlocking every other byte of one lock would otherwise grow the owner's ranges (and
/// the host kernel's lock records) without end. Past the bound such an unlock is refused with
/// ENOLCK, as POSIX allows; an unlock that splits nothing is still done.
#[test]
fn unlocks_that_split_a_range_are_bounded_too() {
    const ENOLCK: i32 = 37;
    const F_UNLCK: u32 = 2;
    let (mut h, node, a, _) = setup("unlock-splits");
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_WRLCK, 0, 1 << 20, false)), 0);
    // Each unlock of an inner byte adds one range: 1 023 of them make 1 024 ranges.
    for i in 0..1023u64 {
        assert_eq!(setlk(&mut h, node, &lk(a, 7, F_UNLCK, 2 * i + 1, 2 * i + 1, false)), 0, "{i}");
    }
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_UNLCK, 4001, 4001, false)), ENOLCK);
    // The host still has the byte locked: another owner cannot take it.
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_WRLCK, 4001, 4001, false)), EAGAIN);
    // Unlocking a whole range, or the end of one, splits nothing.
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_UNLCK, 0, 0, false)), 0, "a whole range");
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_UNLCK, 1 << 20, 1 << 20, false)), 0, "an end");
    assert_eq!(setlk(&mut h, node, &lk(a, 7, F_UNLCK, 0, u64::MAX >> 1, false)), 0, "all");
    assert_eq!(setlk(&mut h, node, &lk(a, 8, F_WRLCK, 4001, 4001, false)), 0);
}
