#!/usr/bin/env bash
# Every vhu-fs-bench workload against vhu-fsd, virtiofsd and the host floor, interleaved round by
# round on one share, with medians and ratios (vhu-fsd first). virtiofsd comes from
# scripts/peers.sh (PATH, or crates.io into the cargo target directory).
#
#   scripts/fs-bench-compare.sh                  # depth 1 and depth 32, one request queue each
#   scripts/fs-bench-compare.sh --depth 32 --workload rand-read-4k --rounds 5 --json out.json
#
# Arguments given are passed to vhu-fs-bench (and replace the default depths). VHU_QUEUES=N
# also runs vhu-fsd with N request queues (virtiofsd serves one).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
virtiofsd=$(scripts/peers.sh)

cargo build --quiet --release -p vhu-device-fs --bin vhu-fsd --bin vhu-fs-bench
bench="$target_dir/release/vhu-fs-bench"
vhu="$target_dir/release/vhu-fsd"
echo "vhu-fsd:   $("$vhu" --version 2>&1 | head -n1)"
echo "virtiofsd: $("$virtiofsd" --version 2>&1 | head -n1)"
echo "machine:   $(nproc) CPUs, $(uname -sr), $(date -u +%F)"

targets=(
    --backend "vhu-fsd:1=$vhu --socket-path {socket} --shared-dir {shared}"
    --backend "virtiofsd:1=$virtiofsd --socket-path {socket} --shared-dir {shared}"
)
if [ -n "${VHU_QUEUES:-}" ]; then
    targets+=(--backend "vhu-fsd-${VHU_QUEUES}q:${VHU_QUEUES}=$vhu --socket-path {socket} \
--shared-dir {shared} --num-request-queues {queues}")
fi

if [ $# -gt 0 ]; then
    exec "$bench" "${targets[@]}" --host "$@"
fi
for depth in 1 32; do
    "$bench" "${targets[@]}" --host --depth "$depth" --rounds 3
done
