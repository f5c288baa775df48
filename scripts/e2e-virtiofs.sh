#!/usr/bin/env bash
# End-to-end test of a virtio-fs back-end with a real Linux guest.
#
# Boots a Linux guest in QEMU (TCG, no KVM needed) with a vhost-user-fs-pci
# device connected to the back-end under test, mounts the share in the guest
# with `mount -t virtiofs`, runs a workload of real file operations and escape
# attempts (scripts/e2e/workload.sh), then checks the host-side view of what the
# guest did. Ends with one line "e2e: N passed, M failed" and exits non-zero on
# any failure or missing result.
#
# Usage: scripts/e2e-virtiofs.sh [options]
#   --backend NAME      vhu-fsd (default: target/release/vhu-fsd of this repo)
#                       or virtiofsd (the reference back-end; built with
#                       `cargo install virtiofsd --locked` when missing)
#   --backend-cmd CMD   command line of any back-end; {socket} and {shared} are
#                       replaced by the socket path and the shared directory
#                       (also exported as E2E_SOCKET and E2E_SHARED)
#   --kernel PATH       guest kernel (default: the newest /boot/vmlinuz-*)
#   --no-vmlinux        boot the compressed bzImage instead of the extracted
#                       vmlinux (slower under TCG)
#   --queues N          number of virtio-fs request queues (default 1; the
#                       back-end must be started with as many)
#   --packed            ask QEMU for packed virtqueues (packed=on)
#   --backend-flags F   extra options for the back-end (e.g. --allow-direct-io)
#   --fio               pack fio into the guest and run an O_DIRECT random-write
#                       job with crc32c verification (installs Debian's fio)
#   --libvirt SETTINGS  let libvirt start the guest and vhu-fsd (scripts/e2e/libvirt.sh):
#                       "xattr=on|off cache=none|always sandbox=chroot|namespace
#                       threads=N lock=on comma=on" (comma=on: the share's path
#                       holds commas)
#   --timeout SECS      limit for the whole guest run (default 240)
#   --no-install        never install packages, fail when something is missing
#   --keep              keep the temp directory (console log, back-end log, share)
#   --verbose           print the whole guest console
# Environment: BACKEND, BACKEND_CMD, E2E_KERNEL, E2E_TIMEOUT, E2E_KEEP=1,
# E2E_VERBOSE=1 act like the options of the same meaning; VHU_FSD overrides
# the path of the vhu-fsd binary; E2E_MODULES_ROOT is where the guest kernel's
# lib/modules lies when not under / (a kernel package unpacked elsewhere, as
# scripts/e2e-old-stack.sh does). The back-end command is run by bash, so it
# may be any shell command line.
#
# Exit status: 0 all checks passed, 1 a check failed or a result is missing,
# 2 the back-end binary or a needed tool is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/scripts/e2e

# ---- options -------------------------------------------------------------------

BACKEND=${BACKEND:-vhu-fsd}
BACKEND_CMD=${BACKEND_CMD:-}
KERNEL=${E2E_KERNEL:-}
TIMEOUT=${E2E_TIMEOUT:-240}
KEEP=${E2E_KEEP:-0}
VERBOSE=${E2E_VERBOSE:-0}
USE_VMLINUX=1
INSTALL=1
QUEUES=1
PACKED=0
BACKEND_FLAGS=
FIO=0
LIBVIRT=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        --backend) BACKEND=${2:?"$1 needs a value"}; shift 2 ;;
        --backend=*) BACKEND=${1#*=}; shift ;;
        --backend-cmd) BACKEND_CMD=${2:?"$1 needs a value"}; shift 2 ;;
        --backend-cmd=*) BACKEND_CMD=${1#*=}; shift ;;
        --kernel) KERNEL=${2:?"$1 needs a value"}; shift 2 ;;
        --no-vmlinux) USE_VMLINUX=0; shift ;;
        --queues) QUEUES=${2:?"$1 needs a value"}; shift 2 ;;
        --packed) PACKED=1; shift ;;
        --backend-flags) BACKEND_FLAGS=${2:?"$1 needs a value"}; shift 2 ;;
        --backend-flags=*) BACKEND_FLAGS=${1#*=}; shift ;;
        --fio) FIO=1; shift ;;
        --libvirt) LIBVIRT=${2:?"$1 needs a value"}; shift 2 ;;
        --timeout) TIMEOUT=${2:?"$1 needs a value"}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        --verbose) VERBOSE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "e2e: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

. "$E2E/identity-host.sh"
. "$E2E/locks-host.sh"
. "$E2E/libvirt.sh"

log() { echo "e2e: $*"; }
die() { echo "e2e: $*" >&2; exit 2; }

. "$E2E/guest.sh"

# ---- packages (scripts/e2e/guest.sh does the installing) --------------------------

ensure_packages() {
    local extra=()
    [ "$FIO" = 0 ] || command -v fio >/dev/null || extra+=(fio)
    ensure_guest_packages "${extra[@]}"
}

# ---- the back-end command --------------------------------------------------------

find_virtiofsd() {
    command -v virtiofsd 2>/dev/null && return 0
    local p
    for p in "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/virtiofsd" /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    return 1
}

# Builds the reference back-end from crates.io when it is not there.
ensure_virtiofsd() {
    find_virtiofsd >/dev/null && return 0
    [ "$INSTALL" = 1 ] || die "virtiofsd not found (cargo install virtiofsd --locked)"
    command -v cargo >/dev/null || die "virtiofsd not found and no cargo to build it"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        local need=()
        local p
        for p in libcap-ng-dev libseccomp-dev pkg-config; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
        done
        if [ ${#need[@]} -gt 0 ]; then apt_update_once; apt_install "${need[@]}"; fi
    fi
    log "building virtiofsd: cargo install virtiofsd --locked (about a minute or two)"
    cargo install virtiofsd --locked --quiet
    find_virtiofsd >/dev/null || die "virtiofsd still not found after cargo install"
}

# The options both back-ends understand (vhu-fsd is a drop-in for virtiofsd).
# Each back-end runs in its default sandbox (namespaces, the share as root);
# --xattr lets the guest exercise extended attributes.
# No --tag: it makes virtiofsd offer the CONFIG protocol feature, which crashes
# QEMU 7.1-8.0; the tag is given to QEMU's device instead.
COMMON_FLAGS='--socket-path {socket} --shared-dir {shared} --xattr'

resolve_backend_cmd() {
    if [ -n "$BACKEND_CMD" ]; then
        BACKEND=custom
        return 0
    fi
    case $BACKEND in
        vhu-fsd)
            local bin=${VHU_FSD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/vhu-fsd}
            VHU_FSD_BIN=$(realpath "$bin" 2>/dev/null || echo "$bin")
            if [ ! -x "$bin" ]; then
                echo "e2e: the back-end $bin does not exist." >&2
                echo "e2e: build it first (cargo build --release -p <its crate>)," >&2
                echo "e2e: or run against the reference: $0 --backend virtiofsd" >&2
                exit 2
            fi
            BACKEND_CMD="$bin $COMMON_FLAGS${BACKEND_FLAGS:+ $BACKEND_FLAGS}"
            if [ "$QUEUES" != 1 ]; then BACKEND_CMD+=" --num-request-queues $QUEUES"; fi
            ;;
        virtiofsd)
            ensure_virtiofsd
            BACKEND_CMD="$(find_virtiofsd) $COMMON_FLAGS${BACKEND_FLAGS:+ $BACKEND_FLAGS}"
            ;;
        *) die "unknown back-end '$BACKEND' (vhu-fsd, virtiofsd, or --backend-cmd)" ;;
    esac
}

# ---- guest kernel and initramfs --------------------------------------------------

# Builds the initramfs: busybox, /init, the workload, the modules (decompressed:
# busybox insmod loads plain .ko files) and guest-side decoy files at the paths
# the host's escape links point to. Written as an uncompressed newc cpio, which
# boots faster under TCG than a compressed one.
build_initramfs() {
    local stage=$WORK/initramfs
    stage_initramfs "$stage" "$E2E/workload.sh" virtio_pci virtiofs
    cp "$E2E/identity.sh" "$stage/identity.sh"
    cp "$E2E/locks.sh" "$stage/locks.sh"
    if [ "$FIO" = 1 ]; then
        pack_fio "$stage" || die "--fio: could not pack fio into the initramfs"
    fi
    [ -x "$WORK/vfs-probe" ] && cp "$WORK/vfs-probe" "$stage/bin/vfs-probe"
    log "guest modules: $(tr '\n' ' ' < "$stage/modules.list")$([ -s "$stage/modules.list" ] || echo '(all built in)')"

    # Guest-side files where the host's escape links point (see workload.sh).
    echo "GUEST-VIEW rel" > "$stage/secret.txt"
    mkdir -p "$stage$WORK"
    echo "GUEST-VIEW abs" > "$stage$WORK/secret.txt"
    echo "GUEST-ORIGINAL" > "$stage$WORK/outside-target.txt"

    cat > "$stage/e2e.conf" <<EOF
TAG='$TAG'
WORK='$WORK'
MARKER_NAME='$MARKER_NAME'
HOST_BIG_SHA256='$HOST_BIG_SHA256'
HOST_ROOT='$([ "$(id -u)" = 0 ] && echo 1 || echo 0)'
XATTR='$([[ " $LIBVIRT " == *" xattr=off "* ]] && echo 0 || echo 1)'
TMPFS='$([ -n "$IDENTITY_TMPFS" ] && echo 1 || echo 0)'
EOF
    pack_initramfs "$stage" "$WORK/initrd.cpio"
}

# ---- the host side of the share ---------------------------------------------------

# Fills the share with files for the guest to read and with symbolic links that
# point outside the share; puts a secret file and a marker file next to it.
prepare_share() {
    SHARE=$WORK/share
    [[ " $LIBVIRT " == *" comma=on "* ]] && SHARE="$WORK/share,with,commas"
    mkdir -p "$SHARE/host-dir"
    echo "hello from the host" > "$SHARE/host-file.txt"
    echo "nested" > "$SHARE/host-dir/nested.txt"
    head -c $((16 << 20)) /dev/urandom > "$SHARE/host-big.bin"
    HOST_BIG_SHA256=$(sha256sum "$SHARE/host-big.bin" | cut -d' ' -f1)

    SECRET="HOST-SECRET-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "$SECRET" > "$WORK/secret.txt"
    echo "HOST-ORIGINAL" > "$WORK/outside-target.txt"
    MARKER_NAME="host-only-marker-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "marker" > "$WORK/$MARKER_NAME"

    ln -s ../secret.txt "$SHARE/escape-rel"
    ln -s "$WORK/secret.txt" "$SHARE/escape-abs"
    ln -s "$WORK" "$SHARE/escape-dir"
    ln -s "$WORK/outside-target.txt" "$SHARE/escape-write"
    prepare_identity "$SHARE"
}

# ---- results ------------------------------------------------------------------------

. "$E2E/results.sh"

# ---- main -----------------------------------------------------------------------------

resolve_backend_cmd
ensure_packages
pick_kernel
if [ -n "$LIBVIRT" ]; then
    [ "$BACKEND" = vhu-fsd ] || die "--libvirt runs vhu-fsd only"
    libvirt_packages
    libvirt_start
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhu-e2e.XXXXXX")
BACKEND_PID=
cleanup() {
    if [ -n "$BACKEND_PID" ] && kill -0 "$BACKEND_PID" 2>/dev/null; then
        kill "$BACKEND_PID" 2>/dev/null || true
        wait "$BACKEND_PID" 2>/dev/null || true
    fi
    libvirt_stop
    stop_lock_helpers
    cleanup_identity
    if [ "$KEEP" = 1 ]; then
        echo "e2e: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

TAG=e2efs
SOCK=$WORK/vhost.sock
T0=$(date +%s.%N)

# A small static helper for xattrs and fsync, for the guest and the host.
if command -v gcc >/dev/null; then
    gcc -static -O2 -o "$WORK/vfs-probe" "$E2E/vfs-probe.c" 2>"$WORK/vfs-probe.err" ||
        { log "building vfs-probe failed (xattr checks will be skipped): $(cat "$WORK/vfs-probe.err")"; rm -f "$WORK/vfs-probe"; }
    rm -f "$WORK/vfs-probe.err"
else
    log "no gcc: xattr checks will be skipped"
fi

prepare_share
build_initramfs
start_lock_helpers "$SHARE" "$WORK/vfs-probe"

BOOT_KERNEL=$KERNEL
if [ "$USE_VMLINUX" = 1 ]; then
    if extract_vmlinux "$KERNEL" "$WORK/vmlinux"; then
        BOOT_KERNEL=$WORK/vmlinux
    else
        log "could not extract vmlinux from $KERNEL; booting the bzImage"
    fi
fi
log "kernel $KVER ($BOOT_KERNEL), $(qemu-system-x86_64 --version | head -n 1)"

# Starts the back-end and QEMU by hand and waits until the guest powers off.
run_direct() {
    # Start the back-end; it listens on the socket, QEMU connects to it.
    cmd=${BACKEND_CMD//\{socket\}/$SOCK}
    cmd=${cmd//\{shared\}/$SHARE}
    export E2E_SOCKET=$SOCK E2E_SHARED=$SHARE
    log "back-end ($BACKEND): $cmd"
    timeout --kill-after=5 $((TIMEOUT + 30)) bash -c "$cmd" > "$WORK/backend.log" 2>&1 &
    BACKEND_PID=$!
    for ((i = 0; i < 200; i++)); do
        [ -S "$SOCK" ] && break
        kill -0 "$BACKEND_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [ ! -S "$SOCK" ]; then
        echo "e2e: the back-end did not create $SOCK; its output:" >&2
        sed 's/^/  | /' "$WORK/backend.log" >&2
        record FAIL backend/start "no socket"
        echo "e2e: $PASSED passed, $FAILED failed"
        exit 1
    fi

    # Boot the guest. TCG only (this kind of machine's /dev/kvm cannot run a stock
    # kernel); one vCPU; guest RAM in a shared memfd so the back-end can map it.
    MEM=1G
    device="vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=$TAG"
    [ "$QUEUES" != 1 ] && device+=",num-request-queues=$QUEUES"
    [ "$PACKED" = 1 ] && device+=",packed=on"
    T1=$(date +%s.%N)
    qemu_rc=0
    timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
        -machine q35,memory-backend=mem -accel tcg -cpu qemu64 -smp 1 -m "$MEM" \
        -object memory-backend-memfd,id=mem,size="$MEM",share=on \
        -nodefaults -no-user-config -display none -monitor none -no-reboot \
        -serial "file:$WORK/console.log" \
        -kernel "$BOOT_KERNEL" -initrd "$WORK/initrd.cpio" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
        -chardev "socket,id=vfs,path=$SOCK" -device "$device" \
        > "$WORK/qemu.out" 2>&1 || qemu_rc=$?
    T2=$(date +%s.%N)
    touch "$WORK/console.log"

    # The back-end should leave by itself once QEMU has disconnected.
    backend_rc=running
    for ((i = 0; i < 100; i++)); do
        kill -0 "$BACKEND_PID" 2>/dev/null || break
        sleep 0.05
    done
    if ! kill -0 "$BACKEND_PID" 2>/dev/null; then
        backend_rc=0
        wait "$BACKEND_PID" || backend_rc=$?
        BACKEND_PID=
    fi
}

if [ -n "$LIBVIRT" ]; then
    libvirt_run_guest
else
    run_direct
fi

[ "$VERBOSE" = 1 ] && sed 's/^/  guest| /' "$WORK/console.log"

parse_console
report_guest
report_host

# QEMU must have powered off by itself within the time limit.
case $qemu_rc in
    0) record PASS qemu/exit ;;
    124|137) record FAIL qemu/exit "timed out after ${TIMEOUT}s" ;;
    *) record FAIL qemu/exit "status $qemu_rc: $(tail -n 3 "$WORK/qemu.out" | tr '\n' ' ')" ;;
esac
# The back-end must not have crashed; one that keeps running after the
# front-end left is stopped here and only noted.
case $backend_rc in
    running) log "note: the back-end was still running after QEMU exited; stopping it" ;;
    *) if [ "$backend_rc" -ge 124 ]; then
           record FAIL backend/exit "exit status $backend_rc (signal or timeout)"
       else
           record PASS backend/exit
           [ "$backend_rc" = 0 ] || log "note: the back-end exited with status $backend_rc"
       fi ;;
esac

if [ "$FAILED" -gt 0 ]; then
    echo "e2e: --- last lines of the guest console (without PASS lines) ---"
    if [ -s "$WORK/console.log" ]; then
        { grep -av 'E2E PASS\|E2E TIME' "$WORK/console.log" || true; } | tail -n 40 | sed 's/^/  guest| /'
    else
        echo "  guest| (empty: the guest printed nothing)"
    fi
    echo "e2e: --- last lines of the back-end log ---"
    tail -n 20 "$WORK/backend.log" | sed 's/^/  backend| /'
    if [ -s "$WORK/qemu.out" ]; then
        echo "e2e: --- QEMU ---"
        tail -n 10 "$WORK/qemu.out" | sed 's/^/  qemu| /'
    fi
fi

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
uptime_line=$(grep -aoE 'E2E EXIT .*' "$WORK/console.log" | tail -n 1 || true)
log "timing: setup $(secs "$T0" "$T1") s, QEMU run $(secs "$T1" "$T2") s (${uptime_line:-no guest exit line})"
summary="e2e: $PASSED passed, $FAILED failed"
[ "$SKIPPED" -gt 0 ] && summary+=", $SKIPPED skipped"
echo "$summary"
[ "$FAILED" -eq 0 ]
