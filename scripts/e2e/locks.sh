# Guest checks of the virtio-fs end-to-end test about locks shared with the host
# (host side: locks-host.sh). Sourced by workload.sh, which defines run/expect.
#
# The host holds a POSIX (fcntl) lock on $M/locks/p and a flock on $M/locks/f
# until the guest creates release-p / release-f; and it tries the guest's locks
# on $M/locks/g and $M/locks/h once the guest says it holds them, writing what it
# saw to host-try-g / host-try-h before creating host-done.

L=$M/locks

# wait_for PATH SECONDS: poll until PATH exists.
wait_for() {
    i=0
    while [ ! -e "$1" ]; do
        i=$((i + 1))
        [ $i -le $(($2 * 20)) ] || return 1
        usleep 50000
    done
}

t_locks_host_held() {
    [ -e $L/host-holds-p ] && [ -e $L/host-holds-f ] ||
        { DETAIL="the host holds no locks (helpers not running)"; return 3; }
    vfs-probe trylock $L/p posix; rc=$?
    expect posix-busy $rc 4 || return 1
    vfs-probe trylock $L/f flock; rc=$?
    expect flock-busy $rc 4 || return 1
    # Blocking attempts wait (SETLKW) while the rest of the file system keeps working.
    vfs-probe waitlock $L/p posix & posix=$!
    vfs-probe waitlock $L/f flock & flock=$!
    sleep 1
    kill -0 $posix 2>/dev/null || { DETAIL="F_SETLKW returned while the host held the lock"; return 1; }
    kill -0 $flock 2>/dev/null || { DETAIL="LOCK_EX returned while the host held the lock"; return 1; }
    ls $M > /dev/null || { DETAIL="the share stalled behind a waiting lock"; return 1; }
    touch $L/release-p $L/release-f
    wait $posix; rc=$?
    expect posix-granted $rc 0 || return 1
    wait $flock; rc=$?
    expect flock-granted $rc 0
}

t_locks_guest_held() {
    [ -e $L/host-holds-p ] || { DETAIL="no host lock helper"; return 3; }
    vfs-probe holdlock $L/g posix $L/guest-holds-g $L/host-done & g=$!
    vfs-probe holdlock $L/h flock $L/guest-holds-h $L/host-done & h=$!
    wait $g; rc=$?
    expect posix-hold $rc 0 || return 1
    wait $h; rc=$?
    expect flock-hold $rc 0 || return 1
    expect host-saw-posix "$(cat $L/host-try-g 2>&1)" 4 || return 1
    expect host-saw-flock "$(cat $L/host-try-h 2>&1)" 4 || return 1
    # Released with the guest processes: the guest takes them again at once.
    vfs-probe trylock $L/g posix; rc=$?
    expect posix-free $rc 0
}
