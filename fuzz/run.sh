#!/usr/bin/env bash
# Runs every fuzz target in fuzz/fuzz_targets/ for a bounded time.
#
#   FUZZ_SECONDS=60 bash fuzz/run.sh          # all targets, 60 s each (the default)
#   FUZZ_SECONDS=20 bash fuzz/run.sh frame_decode
#
# Needs only a Rust toolchain with a C++ compiler: cargo-fuzz is installed if missing, and
# RUSTC_BOOTSTRAP=1 lets it pass its unstable flags (sanitizers, sancov) to the stable compiler.
# The seed corpus in fuzz/corpus/<target>/ is read but never written: new inputs go to a
# temporary directory that is deleted afterwards. A crashing input is kept in
# fuzz/artifacts/<target>/ (beside the run's log) and printed in hex; copy it to
# fuzz/regressions/<target>/ so the unit tests replay it. Exits non-zero if any target crashes or
# fails to build.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

seconds="${FUZZ_SECONDS:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a positive integer, got '$seconds'" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for file in "$fuzz_dir"/fuzz_targets/*.rs; do
        name="$(basename "$file" .rs)"
        targets+=("$name")
    done
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "no fuzz targets in $fuzz_dir/fuzz_targets" >&2
    exit 2
fi

# The binaries are behind the `libfuzzer` feature (see fuzz/Cargo.toml).
fuzz_args=(--fuzz-dir "$fuzz_dir" --features libfuzzer)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "building ${#targets[@]} fuzz target(s)"
if ! cargo fuzz build "${fuzz_args[@]}" >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    echo "fuzz build failed" >&2
    exit 1
fi

failed=0
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    if [[ -d "$fuzz_dir/corpus/$target" ]]; then
        seeds+=("$fuzz_dir/corpus/$target")
    fi
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$artifacts"
    before="$(find "$artifacts" -type f ! -name '*.log' | sort)"
    log="$work/$target.log"

    if cargo fuzz run "${fuzz_args[@]}" "$target" "$corpus" ${seeds[@]+"${seeds[@]}"} -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" |
            tail -n 1)"
        cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)"
        echo "$target: ok (${runs:-no run count}${cov:+, $cov}, ${seconds} s budget)"
    else
        failed=1
        cp "$log" "$artifacts/last-failure.log"
        {
            grep -A2 'panicked at' "$log" | head -n 6 || true
            grep -m1 '^SUMMARY' "$log" || true
            sed -n '/^Failing input:/,/^Minimize/p' "$log"
            # A build or setup error has none of the markers above.
            grep -q -e 'panicked at' -e '^SUMMARY' "$log" || tail -n 40 "$log"
        } >&2
        echo "$target: FAILED (full log: $artifacts/last-failure.log)"
        comm -13 <(printf '%s\n' "$before") <(find "$artifacts" -type f ! -name '*.log' | sort) |
            while read -r artifact; do
                [[ -n "$artifact" ]] || continue
                echo "  crashing input: $artifact"
                echo "  hex: $(od -An -v -tx1 "$artifact" | tr -d ' \n')"
            done
    fi
done

exit "$failed"
