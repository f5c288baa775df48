#!/usr/bin/env bash
# vhu-fsd serving a real guest, in one command: builds vhu-fsd, installs what is missing
# (QEMU, a Debian kernel, static busybox; as root, with apt-get), starts vhu-fsd on a
# directory, boots a throwaway Linux guest under QEMU (TCG, no KVM needed, a few seconds) that
# mounts it with `mount -t virtiofs`, and runs a command there or opens a shell on the mount.
# Everything it started is stopped and its temporary files removed when it ends.
#
#   scripts/demo.sh                      # a demonstration: the guest lists, reads and writes
#   scripts/demo.sh --shell              # a shell in the guest, in the share
#   scripts/demo.sh -- 'df -h . && ls -l'    # this command in the guest, in the share
#   scripts/demo.sh --share ~/src -- 'find . -name "*.rs" | wc -l'
#
# Options: --share DIR (default: a fresh temporary directory with a file in it), --kernel PATH
# (default: the newest /boot/vmlinuz-*), --no-install (never install packages), --shell.
# Exit status: the guest command's, or 2 when something needed is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/scripts/e2e
KERNEL=${E2E_KERNEL:-}
INSTALL=1
SHARE=
SHELL_MODE=0
COMMAND=
while [ $# -gt 0 ]; do
    case $1 in
        --share) SHARE=${2:?"$1 needs a value"}; shift 2 ;;
        --kernel) KERNEL=${2:?"$1 needs a value"}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --shell) SHELL_MODE=1; shift ;;
        --) shift; COMMAND="$*"; break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 2; }
. "$E2E/guest.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhu-demo.XXXXXX")
FSD_PID=
cleanup() {
    if [ -n "$FSD_PID" ] && kill -0 "$FSD_PID" 2>/dev/null; then
        kill "$FSD_PID" 2>/dev/null || true
        wait "$FSD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log "building vhu-fsd (cargo build --release)"
(cd "$ROOT" && cargo build --quiet --release -p vhu-device-fs --bin vhu-fsd)
FSD=${CARGO_TARGET_DIR:-$ROOT/target}/release/vhu-fsd
ensure_guest_packages
pick_kernel

if [ -z "$SHARE" ]; then
    SHARE=$WORK/share
    mkdir -p "$SHARE"
    echo "hello from the host, $(date -u +%FT%TZ)" > "$SHARE/hello.txt"
    [ -n "$COMMAND" ] || [ "$SHELL_MODE" = 1 ] ||
        COMMAND='ls -l && cat hello.txt && echo "written by the guest" > from-guest.txt && sync from-guest.txt'
fi
SHARE=$(cd "$SHARE" && pwd)
[ "$SHELL_MODE" = 1 ] && COMMAND=
if [ -z "$COMMAND" ] && [ ! -t 0 ]; then
    die "--shell needs a terminal; give a command instead: $0 -- 'ls -l'"
fi

# The guest: busybox, the virtio modules the kernel does not have built in, the script.
TAG=demo
stage=$WORK/initramfs
stage_initramfs "$stage" "$E2E/demo-guest.sh" virtio_pci virtiofs
printf '%s\n' "$COMMAND" > "$stage/cmd.sh"
[ -n "$COMMAND" ] || : > "$stage/cmd.sh"
printf "TAG='%s'\n" "$TAG" > "$stage/demo.conf"
pack_initramfs "$stage" "$WORK/initrd.cpio"
BOOT_KERNEL=$KERNEL
extract_vmlinux "$KERNEL" "$WORK/vmlinux" && BOOT_KERNEL=$WORK/vmlinux

SOCK=$WORK/vhu-fsd.sock
log "starting vhu-fsd: $FSD --socket-path $SOCK --shared-dir $SHARE"
"$FSD" --socket-path "$SOCK" --shared-dir "$SHARE" > "$WORK/vhu-fsd.log" 2>&1 &
FSD_PID=$!
for ((i = 0; i < 200; i++)); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || die "vhu-fsd did not start: $(cat "$WORK/vhu-fsd.log")"

log "booting a Linux $KVER guest under $(qemu-system-x86_64 --version | head -n 1 | sed 's/ (.*//') (TCG)"
qemu=(qemu-system-x86_64
    -machine q35,memory-backend=mem -accel tcg -cpu qemu64 -smp 1 -m 512M
    -object memory-backend-memfd,id=mem,size=512M,share=on
    -nodefaults -no-user-config -display none -no-reboot
    -kernel "$BOOT_KERNEL" -initrd "$WORK/initrd.cpio"
    -append "console=ttyS0 quiet panic=-1 rdinit=/init"
    -chardev "socket,id=vfs,path=$SOCK"
    -device "vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=$TAG")
if [ -z "$COMMAND" ]; then
    # The console is this terminal (Ctrl-A X ends QEMU if the guest hangs).
    "${qemu[@]}" -serial mon:stdio || true
    status=0
else
    # Bounded: a guest that never powers off fails the demo instead of holding it.
    timeout --kill-after=10 "${DEMO_TIMEOUT:-300}" \
        "${qemu[@]}" -serial stdio -monitor none > "$WORK/console.log" 2>&1 &
    qemu_pid=$!
    tail -n +1 -f --pid "$qemu_pid" "$WORK/console.log" 2>/dev/null | grep --line-buffered -av '^E2E \|^DEMO STATUS\|^\[ *[0-9]' || true
    wait "$qemu_pid" || true
    status=$(sed -n 's/^DEMO STATUS \([0-9]*\).*/\1/p' "$WORK/console.log" | tail -n 1)
    [ -n "$status" ] || { log "the guest did not finish (see above)"; status=1; }
fi
if [ -e "$SHARE/from-guest.txt" ] && [ "$SHARE" = "$WORK/share" ]; then
    log "on the host, $SHARE/from-guest.txt says: $(cat "$SHARE/from-guest.txt")"
fi
log "done; vhu-fsd stopped and temporary files removed"
exit "$status"
