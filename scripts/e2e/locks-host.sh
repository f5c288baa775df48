# Host side of the lock checks (guest side: locks.sh), sourced by
# e2e-virtiofs.sh. Host processes hold a POSIX lock and a flock on two files
# until the guest asks them to let go, and try the guest's locks on two others
# while the guest holds them. Uses the static vfs-probe helper.

LOCK_PIDS=()

# start_lock_helpers SHARE PROBE: starts the helpers and waits until the host
# holds its two locks, so the guest finds them held.
start_lock_helpers() {
    local share=$1 probe=$2 l=$1/locks
    [ -x "$probe" ] || return 0
    mkdir -p "$l"
    : > "$l/p"; : > "$l/f"; : > "$l/g"; : > "$l/h"
    "$probe" holdlock "$l/p" posix "$l/host-holds-p" "$l/release-p" & LOCK_PIDS+=($!)
    "$probe" holdlock "$l/f" flock "$l/host-holds-f" "$l/release-f" & LOCK_PIDS+=($!)
    (
        for i in $(seq 1200); do
            [ -e "$l/guest-holds-g" ] && [ -e "$l/guest-holds-h" ] && break
            sleep 0.1
        done
        # Exit status 4 (held elsewhere) is the expected answer: not an error here.
        rc=0; "$probe" trylock "$l/g" posix || rc=$?; echo $rc > "$l/host-try-g"
        rc=0; "$probe" trylock "$l/h" flock || rc=$?; echo $rc > "$l/host-try-h"
        : > "$l/host-done"
    ) & LOCK_PIDS+=($!)
    local i
    for i in $(seq 100); do
        [ -e "$l/host-holds-p" ] && [ -e "$l/host-holds-f" ] && return 0
        sleep 0.05
    done
    echo "e2e: the host lock helpers did not take their locks" >&2
}

stop_lock_helpers() {
    local pid
    for pid in "${LOCK_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    LOCK_PIDS=()
}
