#!/usr/bin/env bash
# End-to-end test of vhu-rng, the example entropy device: boots a Linux guest in
# QEMU (TCG) with a vhost-user-rng-pci device connected to vhu-rng, reads
# /dev/hwrng in the guest (scripts/e2e/rng-workload.sh) and checks that the bytes
# came from the back-end. Ends with "e2e-rng: N passed, M failed" and exits
# non-zero on any failure.
#
# Usage: scripts/e2e-rng.sh [--kernel PATH] [--no-install] [--keep] [--verbose]
# Environment: VHU_RNG overrides the path of the vhu-rng binary (default: the
# release example under CARGO_TARGET_DIR or target/); E2E_KERNEL, E2E_TIMEOUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/scripts/e2e
KERNEL=${E2E_KERNEL:-}
TIMEOUT=${E2E_TIMEOUT:-120}
INSTALL=1
KEEP=0
VERBOSE=0
while [ $# -gt 0 ]; do
    case $1 in
        --kernel) KERNEL=${2:?"$1 needs a value"}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        --verbose) VERBOSE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "e2e-rng: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "e2e-rng: $*"; }
die() { echo "e2e-rng: $*" >&2; exit 2; }
. "$E2E/guest.sh"

RNG=${VHU_RNG:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/vhu-rng}
[ -x "$RNG" ] || die "no vhu-rng at $RNG (cargo build --release -p vhu-transport-std --example vhu-rng)"
ensure_guest_packages
pick_kernel

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhu-e2e-rng.XXXXXX")
RNG_PID=
cleanup() {
    if [ -n "$RNG_PID" ] && kill -0 "$RNG_PID" 2>/dev/null; then
        kill "$RNG_PID" 2>/dev/null || true
        wait "$RNG_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The initramfs: busybox, the shared /init running the rng workload, the modules.
stage=$WORK/initramfs
stage_initramfs "$stage" "$E2E/rng-workload.sh" virtio_pci virtio_rng
log "guest modules: $(tr '\n' ' ' < "$stage/modules.list")"
pack_initramfs "$stage" "$WORK/initrd.cpio"
BOOT_KERNEL=$KERNEL
extract_vmlinux "$KERNEL" "$WORK/vmlinux" && BOOT_KERNEL=$WORK/vmlinux
log "kernel $KVER, $(qemu-system-x86_64 --version | head -n 1)"

SOCK=$WORK/rng.sock
"$RNG" --socket-path "$SOCK" > "$WORK/backend.log" 2>&1 &
RNG_PID=$!
for ((i = 0; i < 100; i++)); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { cat "$WORK/backend.log" >&2; die "vhu-rng did not create $SOCK"; }

qemu_rc=0
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
    -machine q35,memory-backend=mem -accel tcg -cpu qemu64 -smp 1 -m 512M \
    -object memory-backend-memfd,id=mem,size=512M,share=on \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -serial "file:$WORK/console.log" \
    -kernel "$BOOT_KERNEL" -initrd "$WORK/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    -chardev "socket,id=rng,path=$SOCK" -device vhost-user-rng-pci,chardev=rng \
    > "$WORK/qemu.out" 2>&1 || qemu_rc=$?
touch "$WORK/console.log"
[ "$VERBOSE" = 1 ] && sed 's/^/  guest| /' "$WORK/console.log"

PASSED=0
FAILED=0
record() {
    if [ "$1" = PASS ]; then PASSED=$((PASSED + 1)); echo "PASS $2"; else FAILED=$((FAILED + 1)); echo "FAIL $2: ${3:-}"; fi
}
for check in rng-current rng-read rng-random rng-differ; do
    line=$(grep -aoE "E2E (PASS|FAIL) $check( .*)?" "$WORK/console.log" | tail -n 1 || true)
    case $line in
        "E2E PASS "*) record PASS "guest/$check" ;;
        "E2E FAIL "*) record FAIL "guest/$check" "${line#E2E FAIL $check }" ;;
        *) record FAIL "guest/$check" "no result from the guest" ;;
    esac
done
grep -aq 'E2E DONE' "$WORK/console.log" && record PASS guest/done || record FAIL guest/done "the workload did not finish"
[ "$qemu_rc" = 0 ] && record PASS qemu/exit || record FAIL qemu/exit "status $qemu_rc: $(tail -n 3 "$WORK/qemu.out" | tr '\n' ' ')"
# The device kept serving across the session and is still there for the next front-end.
kill -0 "$RNG_PID" 2>/dev/null && record PASS backend/alive || record FAIL backend/alive "vhu-rng exited: $(tail -n 3 "$WORK/backend.log")"

if [ "$FAILED" -gt 0 ]; then
    echo "e2e-rng: --- guest console ---"
    tail -n 30 "$WORK/console.log" | sed 's/^/  guest| /'
    echo "e2e-rng: --- vhu-rng ---"
    tail -n 10 "$WORK/backend.log" | sed 's/^/  backend| /'
fi
echo "e2e-rng: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
