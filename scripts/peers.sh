#!/usr/bin/env bash
# Prints the path of virtiofsd, the reference virtio-fs back-end the benchmarks and the
# migration tests run next to vhu-fsd: the one on PATH, or version $VIRTIOFSD_VERSION (1.14.0)
# from crates.io, built into $CARGO_TARGET_DIR/peers on first use (building needs libseccomp and
# libcap-ng, installed with apt-get when run as root). Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

VIRTIOFSD_VERSION=${VIRTIOFSD_VERSION:-1.14.0}
# Absolute: tests run from each package's directory.
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$PWD/target}")

virtiofsd=$(command -v virtiofsd || true)
if [ -z "$virtiofsd" ]; then
    virtiofsd="$target_dir/peers/bin/virtiofsd"
    if [ ! -x "$virtiofsd" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                libseccomp-dev libcap-ng-dev pkg-config >/dev/null
        fi
        echo "peers: building virtiofsd $VIRTIOFSD_VERSION from crates.io" >&2
        cargo install --quiet --locked virtiofsd --version "$VIRTIOFSD_VERSION" \
            --root "$target_dir/peers" >&2
    fi
fi
echo "$virtiofsd"
