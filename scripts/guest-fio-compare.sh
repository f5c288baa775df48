#!/usr/bin/env bash
# vhu-fsd against virtiofsd under a real Linux guest: fio in a QEMU guest (TCG, one vCPU, the
# e2e setup) reads a file on the share with O_DIRECT — 1 MiB sequential and 4 KiB random, one
# job and four — and stats 1 000 files of the share (fio's filestat engine, both back-ends with
# `--cache never` so every stat reaches the back-end as LOOKUP and GETATTR), once per back-end
# per job per round, alternating. Reports the guest's IOPS (stats per second for filestat) and
# the back-end's CPU time per 1 000 guest operations (user + system of its whole process tree,
# boot and mount included), medians over rounds and the ratios vhu-fsd/virtiofsd of the medians.
#
#   scripts/guest-fio-compare.sh [--rounds N] [--runtime SECS] [--kernel PATH] [--no-install]
#
# Installs what is missing as the e2e tests do (QEMU, a kernel, busybox, fio; virtiofsd through
# scripts/peers.sh). Under TCG the guest, not the back-end, limits IOPS: read the CPU column.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/scripts/e2e
KERNEL=${E2E_KERNEL:-}
INSTALL=1
ROUNDS=3
RUNTIME=6
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2:?"$1 needs a value"}; shift 2 ;;
        --runtime) RUNTIME=${2:?"$1 needs a value"}; shift 2 ;;
        --kernel) KERNEL=${2:?"$1 needs a value"}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "guest-fio: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "guest-fio: $*" >&2; }
die() { echo "guest-fio: $*" >&2; exit 2; }
. "$E2E/guest.sh"

extra=()
command -v fio >/dev/null || extra+=(fio)
ensure_guest_packages "${extra[@]}"
pick_kernel
(cd "$ROOT" && cargo build --quiet --release -p vhu-device-fs --bin vhu-fsd)
FSD=${CARGO_TARGET_DIR:-$ROOT/target}/release/vhu-fsd
VIRTIOFSD=$("$ROOT/scripts/peers.sh")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhu-guest-fio.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Stopped, the run takes what it started with it: its background jobs (QEMU's `timeout`, in a
# process group of its own, passes the signal on) and every process of its own group (the
# back-end), itself spared until the cleanup above has run.
trap 'trap "" INT TERM HUP; kill -TERM $(jobs -p) 0 2>/dev/null; exit 130' INT TERM HUP
SHARE=$WORK/share
mkdir -p "$SHARE"
head -c $((256 << 20)) /dev/urandom > "$SHARE/data"
mkdir -p "$SHARE/stat"
for ((i = 0; i < 1000; i++)); do head -c 4096 /dev/zero > "$SHARE/stat/f.$i"; done
BOOT_KERNEL=$KERNEL
extract_vmlinux "$KERNEL" "$WORK/vmlinux" && BOOT_KERNEL=$WORK/vmlinux
TAG=fiofs

# job name, rw, block size, jobs, fio engine
JOBS=("seq-read-1m:read:1m:1:psync" "seq-read-1m:read:1m:4:psync"
      "rand-read-4k:randread:4k:1:psync" "rand-read-4k:randread:4k:4:psync"
      "stat:read:4k:1:filestat" "stat:read:4k:4:filestat")

# run_one BACKEND-COMMAND RW BS JOBS ENGINE: prints "iops cpu_ms_per_1k_ops".
run_one() {
    local cmd=$1 rw=$2 bs=$3 jobs=$4 engine=$5 stage=$WORK/initramfs sock=$WORK/fs.sock
    # Metadata reaches the back-end only when the guest caches none.
    [ "$engine" = filestat ] && cmd="$cmd --cache never"
    rm -rf "$stage"
    stage_initramfs "$stage" "$E2E/fio-guest.sh" virtio_pci virtiofs
    pack_fio "$stage" || die "could not pack fio into the initramfs"
    printf "TAG=%s\nRW=%s\nBS=%s\nJOBS=%s\nRUNTIME=%s\nSIZE=%s\nOFFSET=%s\nENGINE=%s\n" \
        "$TAG" "$rw" "$bs" "$jobs" "$RUNTIME" 64m 64m "$engine" > "$stage/fio.conf"
    pack_initramfs "$stage" "$WORK/initrd.cpio"
    rm -f "$sock"
    # `times` after the back-end exits: its whole tree's user and system CPU.
    bash -c "$cmd --socket-path $sock --shared-dir $SHARE; times" \
        > "$WORK/backend.out" 2> "$WORK/backend.err" &
    local pid=$! i
    for ((i = 0; i < 200; i++)); do [ -S "$sock" ] && break; sleep 0.05; done
    [ -S "$sock" ] || die "the back-end did not start: $(tail -n 3 "$WORK/backend.err")"
    # In the background, waited for: a signal to the run is handled at once, not after QEMU.
    timeout --kill-after=10 $((RUNTIME * 4 + 120)) qemu-system-x86_64 \
        -machine q35,memory-backend=mem -accel tcg -cpu qemu64 -smp 1 -m 512M \
        -object memory-backend-memfd,id=mem,size=512M,share=on \
        -nodefaults -no-user-config -display none -monitor none -no-reboot \
        -serial "file:$WORK/console.log" -kernel "$BOOT_KERNEL" -initrd "$WORK/initrd.cpio" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
        -chardev "socket,id=vfs,path=$sock" \
        -device "vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=$TAG" >/dev/null 2>&1 &
    wait $! || true
    # Both back-ends exit when QEMU hangs up; one that does not is stopped after a while.
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    pkill -P "$pid" 2>/dev/null || true
    wait "$pid" || true
    local terse cpu
    terse=$(sed -n 's/^FIO TERSE //p' "$WORK/console.log" | tail -n 1)
    [ -n "$terse" ] || die "no fio result: $(grep -a 'FIO ERROR' "$WORK/console.log" | head -n 3)"
    # `times`' second line: the children's user and system time, as XmY.YYYs.
    cpu=$(sed -n 2p "$WORK/backend.out" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } print t }')
    # terse v3: field 8 read IOPS, field 9 read runtime (ms).
    awk -F';' -v cpu="$cpu" '{ ops = $8 * $9 / 1000; printf "%d %.3f\n", $8, (ops > 0 ? cpu * 1000 * 1000 / ops : 0) }' <<<"$terse"
}

declare -A RESULT
for ((round = 1; round <= ROUNDS; round++)); do
    for job in "${JOBS[@]}"; do
        IFS=: read -r name rw bs jobs engine <<<"$job"
        # Each round starts with the other back-end: neither is always measured first.
        order=(vhu-fsd virtiofsd)
        ((round % 2 == 0)) && order=(virtiofsd vhu-fsd)
        for backend in "${order[@]}"; do
            case $backend in
                vhu-fsd) cmd=$FSD ;;
                virtiofsd) cmd=$VIRTIOFSD ;;
            esac
            # Not in a subshell, so the run's signal trap sees what it waits for.
            run_one "$cmd" "$rw" "$bs" "$jobs" "$engine" > "$WORK/result"
            r=$(<"$WORK/result")
            log "round $round, $name x$jobs, $backend: $r (IOPS, back-end CPU ms per 1000 ops)"
            RESULT[$name:$jobs:$backend]+="$r;"
        done
    done
done

median() { tr ';' '\n' | awk 'NF' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
col() { tr ';' '\n' | awk -v c="$1" 'NF { print $c }' | tr '\n' ';'; }
echo "guest fio, O_DIRECT reads and stats, ${RUNTIME} s a run, medians of $ROUNDS rounds; $(qemu-system-x86_64 --version | head -n 1); kernel $KVER; $(nproc) host CPUs; $(date -u +%F)"
printf '%-14s %4s %12s %12s %7s %16s %16s %7s\n' job jobs "vhu-fsd IOPS" "virtiofsd" ratio "vhu-fsd CPU/1k" "virtiofsd" ratio
for job in "${JOBS[@]}"; do
    IFS=: read -r name rw bs jobs _ <<<"$job"
    v=${RESULT[$name:$jobs:vhu-fsd]}
    p=${RESULT[$name:$jobs:virtiofsd]}
    vi=$(col 1 <<<"$v" | median); pi=$(col 1 <<<"$p" | median)
    vc=$(col 2 <<<"$v" | median); pc=$(col 2 <<<"$p" | median)
    printf '%-14s %4s %12.0f %12.0f %6.2fx %16.2f %16.2f %6.2fx\n' "$name" "$jobs" "$vi" "$pi" \
        "$(awk -v a="$vi" -v b="$pi" 'BEGIN { print (b > 0 ? a / b : 0) }')" "$vc" "$pc" \
        "$(awk -v a="$vc" -v b="$pc" 'BEGIN { print (b > 0 ? a / b : 0) }')"
done
