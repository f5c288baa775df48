#!/usr/bin/env bash
# End-to-end live migration of a guest whose share is served by vhu-fsd.
#
# Two vhu-fsd processes serve the same directory; a source QEMU (TCG) boots a
# Linux guest that mounts the share, keeps a working directory and open
# descriptors there, writes and fsyncs a checksummed file and keeps appending
# (scripts/e2e/migrate-workload.sh). A destination QEMU waits with
# `-incoming defer`; QMP `migrate` moves the guest — its memory, with the pages
# vhu-fsd wrote logged dirty, and vhu-fsd's device state — and the guest then
# checks on the destination that its descriptors, its working directory and
# every byte it wrote are there. The host checks the same from its side.
#
# Scenarios (all by default, or those named with --scenario, repeatable):
#   live       migration over a socket while the guest writes
#   renamed    saved to a file; on the host the held file is renamed and another
#              file takes its name before the destination loads: find-paths finds
#              the right file
#   lost       as renamed, but the held file is deleted; the destination runs with
#              --migration-on-error guest-error: that descriptor reads EIO, the
#              rest came across
#   abort      as lost with the default --migration-on-error abort: the destination
#              refuses the state, and the source, resumed, finishes the workload
#
# Needs QEMU >= 8.2 (vhost-user-fs migrates through the back-end's device state);
# with an older QEMU every scenario is skipped. Usage:
#   scripts/e2e-migrate.sh [--scenario NAME]... [--kernel PATH] [--timeout SECS]
#                          [--no-install] [--keep] [--verbose]
# VHU_FSD overrides the path of the vhu-fsd binary (default: the release build).
# Ends with "e2e-migrate: N passed, M failed[, K skipped]"; exit status 0 when
# nothing failed, 1 on a failure, 2 when something needed is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/scripts/e2e
KERNEL=${E2E_KERNEL:-}
TIMEOUT=${E2E_TIMEOUT:-180}
INSTALL=1
KEEP=0
VERBOSE=0
SCENARIOS=()
while [ $# -gt 0 ]; do
    case $1 in
        --scenario) SCENARIOS+=("${2:?"$1 needs a value"}"); shift 2 ;;
        --kernel) KERNEL=${2:?"$1 needs a value"}; shift 2 ;;
        --timeout) TIMEOUT=${2:?"$1 needs a value"}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        --verbose) VERBOSE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "e2e-migrate: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(live renamed lost abort)

log() { echo "e2e-migrate: $*"; }
die() { echo "e2e-migrate: $*" >&2; exit 2; }
. "$E2E/guest.sh"

FSD=${VHU_FSD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/vhu-fsd}
[ -x "$FSD" ] || die "no vhu-fsd at $FSD (cargo build --release -p vhu-device-fs --bin vhu-fsd)"
ensure_guest_packages
pick_kernel

PASSED=0
FAILED=0
SKIPPED=0
record() {
    case $1 in
        PASS) PASSED=$((PASSED + 1)); echo "PASS $2" ;;
        SKIP) SKIPPED=$((SKIPPED + 1)); echo "SKIP $2: ${3:-}" ;;
        *) FAILED=$((FAILED + 1)); echo "FAIL $2: ${3:-}" ;;
    esac
}

qemu_version=$(qemu-system-x86_64 --version | head -n 1)
read -r qmajor qminor < <(sed -nE 's/.*version ([0-9]+)\.([0-9]+).*/\1 \2/p' <<<"$qemu_version")
if [ "${qmajor:-0}" -lt 8 ] || { [ "$qmajor" = 8 ] && [ "${qminor:-0}" -lt 2 ]; }; then
    for s in "${SCENARIOS[@]}"; do record SKIP "$s" "$qemu_version blocks vhost-user-fs migration (needs 8.2)"; done
    echo "e2e-migrate: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhu-e2e-migrate.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

TAG=migfs
HELD="held open across the migration"

# ---- the guest ---------------------------------------------------------------------

build_initramfs() {
    local expect=$1 stage=$WORK/initramfs
    rm -rf "$stage"
    stage_initramfs "$stage" "$E2E/migrate-workload.sh" virtio_pci virtiofs
    printf "TAG='%s'\nHELD='%s'\nEXPECT_HELD='%s'\n" "$TAG" "$HELD" "$expect" > "$stage/e2e.conf"
    pack_initramfs "$stage" "$WORK/initrd.cpio"
}

BOOT_KERNEL=$KERNEL
extract_vmlinux "$KERNEL" "$WORK/vmlinux" && BOOT_KERNEL=$WORK/vmlinux
log "kernel $KVER, $qemu_version"

# ---- QMP over TCP, with bash alone -------------------------------------------------

# qmp PORT JSON: sends one command on a fresh connection, prints its reply line.
qmp() {
    local port=$1 cmd=$2 line
    { exec {fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    IFS= read -r -t 10 line <&"$fd" || { exec {fd}<&-; return 1; } # greeting
    printf '{"execute":"qmp_capabilities"}\n' >&"$fd"
    IFS= read -r -t 10 line <&"$fd"
    printf '%s\n' "$cmd" >&"$fd"
    # `quit` may close the connection before its reply arrives.
    while IFS= read -r -t 30 line <&"$fd"; do
        case $line in *'"return"'*|*'"error"'*) echo "$line"; break ;; esac
    done 2>/dev/null
    exec {fd}<&-
}

# wait_qmp PORT: until QEMU answers on it.
wait_qmp() {
    local i
    for ((i = 0; i < 100; i++)); do
        qmp "$1" '{"execute":"query-status"}' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# migration_status PORT: "completed", "failed", "active", ...
migration_status() {
    qmp "$1" '{"execute":"query-migrate"}' | sed -nE 's/.*"status": *"([a-z-]+)".*/\1/p'
}

# wait_migration PORT: until the outgoing migration ends; prints how it ended.
wait_migration() {
    local i status=
    for ((i = 0; i < TIMEOUT * 5; i++)); do
        status=$(migration_status "$1" || true)
        case $status in completed|failed|cancelled) break ;; esac
        sleep 0.2
    done
    echo "${status:-unknown}"
}

# wait_console FILE TEXT SECS: until the console shows TEXT.
wait_console() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -aq "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# listening PORT: whether something takes connections on it.
listening() {
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    exec {fd}<&-
}

# free_port: P such that nothing listens on P or P+1 now (the two QEMUs' QMP ports).
free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 20000))
        listening "$p" || listening $((p + 1)) || break
    done
    echo "$p"
}

# ---- one scenario --------------------------------------------------------------------

start_fsd() { # NAME EXTRA...
    local name=$1
    shift
    "$FSD" --socket-path "$WORK/$name.sock" --shared-dir "$SHARE" --log-level info "$@" \
        > "$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    local i
    for ((i = 0; i < 200; i++)); do [ -S "$WORK/$name.sock" ] && return 0; sleep 0.05; done
    die "vhu-fsd $name did not create its socket: $(tail -n 5 "$WORK/$name.log")"
}

start_qemu() { # NAME PORT EXTRA...
    local name=$1 port=$2
    shift 2
    timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
        -machine q35,memory-backend=mem -accel tcg -cpu qemu64 -smp 1 -m 512M \
        -object memory-backend-memfd,id=mem,size=512M,share=on \
        -nodefaults -no-user-config -display none -monitor none -no-reboot \
        -serial "file:$WORK/$name.console" \
        -kernel "$BOOT_KERNEL" -initrd "$WORK/initrd.cpio" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
        -chardev "socket,id=vfs,path=$WORK/$name-fsd.sock" \
        -device "vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=$TAG" \
        -qmp "tcp:127.0.0.1:$port,server=on,wait=off" "$@" \
        > "$WORK/$name.qemu" 2>&1 &
    PIDS+=($!)
    eval "${name}_QEMU=$!"
}

guest_results() { # CONSOLE PREFIX
    local check line
    for check in cwd data held-fd appends umount; do
        line=$(grep -aoE "E2E (PASS|FAIL) $check( .*)?" "$1" | tail -n 1 || true)
        case $line in
            "E2E PASS"*) record PASS "$2/$check" ;;
            "E2E FAIL"*) record FAIL "$2/$check" "${line#E2E FAIL $check }" ;;
            *) record FAIL "$2/$check" "no result on the console" ;;
        esac
    done
}

# run_scenario NAME: the scenario, then its processes and sockets go whatever it found (an
# early end included), so the next one starts clean.
run_scenario() {
    scenario "$1"
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    rm -f "$WORK"/*.sock
}

scenario() {
    local s=$1 expect=content dst_flags=() how
    log "--- scenario $s"
    case $s in
        live|renamed|abort) ;;
        lost) expect=eio; dst_flags=(--migration-on-error guest-error) ;;
        *) record FAIL "$s" "unknown scenario"; return ;;
    esac
    [ "$s" = abort ] && expect=content
    SHARE=$WORK/share-$s
    mkdir -p "$SHARE/work"
    printf '%s' "$HELD" > "$SHARE/work/held.txt"
    build_initramfs "$expect"
    start_fsd src-fsd
    start_fsd dst-fsd "${dst_flags[@]}"
    local sp dp
    sp=$(free_port)
    dp=$((sp + 1))
    start_qemu src "$sp"
    start_qemu dst "$dp" -incoming defer
    wait_qmp "$sp" && wait_qmp "$dp" || { record FAIL "$s/qmp" "QEMU does not answer QMP"; return; }
    if ! wait_console "$WORK/src.console" "E2E READY" "$TIMEOUT"; then
        record FAIL "$s/boot" "the guest never got ready: $(tail -n 3 "$WORK/src.console" | tr '\n' ' ')"
        return
    fi
    if [ "$s" = live ]; then
        how="unix:$WORK/migration.sock"
        qmp "$dp" "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"$how\"}}" >/dev/null
        qmp "$sp" "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$how\"}}" >/dev/null
    else
        how="file:$WORK/state-$s.bin"
        qmp "$sp" "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$how\"}}" >/dev/null
    fi
    local status
    status=$(wait_migration "$sp")
    if [ "$status" != completed ]; then
        record FAIL "$s/migrate" "the source says '$status': $(qmp "$sp" '{"execute":"query-migrate"}')"
        return
    fi
    record PASS "$s/save"
    case $s in
        renamed)
            mv "$SHARE/work/held.txt" "$SHARE/work/held-renamed.txt"
            echo "an impostor under the old name" > "$SHARE/work/held.txt" ;;
        lost|abort)
            rm "$SHARE/work/held.txt"
            echo "an impostor under the old name" > "$SHARE/work/held.txt" ;;
    esac
    [ "$s" = live ] || qmp "$dp" "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"$how\"}}" >/dev/null
    local console=dst
    if [ "$s" = abort ]; then
        # The destination must refuse the state and stop; the source carries on.
        local i
        for ((i = 0; i < TIMEOUT * 10; i++)); do kill -0 "$dst_QEMU" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$dst_QEMU" 2>/dev/null; then
            record FAIL "$s/refused" "the destination QEMU still runs: $(qmp "$dp" '{"execute":"query-status"}')"
        elif grep -aq "cannot be opened on the destination" "$WORK/dst-fsd.log"; then
            record PASS "$s/refused" "$(grep -ao 'node [0-9]* (work/held.txt) cannot be opened[^:]*' "$WORK/dst-fsd.log" | head -n 1)"
        else
            record FAIL "$s/refused" "no cause in the destination's vhu-fsd log: $(tail -n 3 "$WORK/dst-fsd.log")"
        fi
        qmp "$sp" '{"execute":"cont"}' >/dev/null
        console=src
    else
        local st i
        for ((i = 0; i < 300; i++)); do
            st=$(qmp "$dp" '{"execute":"query-status"}' | sed -nE 's/.*"status": *"([a-z-]+)".*/\1/p' || true)
            [ "$st" = running ] && break
            sleep 0.1
        done
        if [ "$st" = running ]; then record PASS "$s/switch-over"; else record FAIL "$s/switch-over" "destination is '$st'"; fi
        qmp "$sp" '{"execute":"quit"}' >/dev/null || true
    fi
    touch "$SHARE/migrated"
    local q=${console}_QEMU
    if ! wait_console "$WORK/$console.console" "E2E DONE" "$TIMEOUT"; then
        record FAIL "$s/guest" "the guest did not finish on $console: $(tail -n 3 "$WORK/$console.console" | tr '\n' ' ')"
    fi
    guest_results "$WORK/$console.console" "$s"
    [ "$VERBOSE" = 1 ] && sed "s/^/  $s guest| /" "$WORK/src.console" "$WORK/dst.console"
    # The host sees what the guest wrote.
    local lines
    lines=$(cat "$SHARE/work/lines.txt" 2>/dev/null || echo 0)
    if (cd "$SHARE/work" && sha256sum -c data.sha >/dev/null 2>&1) &&
        [ "$(wc -l < "$SHARE/work/log.txt")" = "$lines" ] && [ "$lines" -gt 0 ]; then
        record PASS "$s/host-view" "data.bin matches, log.txt has $lines lines"
    else
        record FAIL "$s/host-view" "data.sha check or log.txt ($lines lines) differs on the host"
    fi
    for ((i = 0; i < TIMEOUT * 10; i++)); do kill -0 "${!q}" 2>/dev/null || break; sleep 0.1; done
}

for s in "${SCENARIOS[@]}"; do run_scenario "$s"; done

summary="e2e-migrate: $PASSED passed, $FAILED failed"
[ "$SKIPPED" -gt 0 ] && summary+=", $SKIPPED skipped"
echo "$summary"
[ "$FAILED" -eq 0 ]
