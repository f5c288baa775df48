#!/usr/bin/env bash
# Prints the path of virtiofsd, the reference virtio-fs back-end the benchmarks and the
# migration tests run next to vhu-fsd: version $VIRTIOFSD_VERSION (1.14.0), the one on PATH when
# it is that version, else built from crates.io into $CARGO_TARGET_DIR/peers on first use (and
# again when the version asked changes) (building needs libseccomp and libcap-ng, installed with apt-get when run as root; another
# version on PATH, such as the C virtiofsd of older distributions with its other options, is
# left alone). Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

VIRTIOFSD_VERSION=${VIRTIOFSD_VERSION:-1.14.0}
# Absolute: tests run from each package's directory.
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$PWD/target}")

virtiofsd=$(command -v virtiofsd || true)
is_pinned() {
    [ "$("$1" --version 2>/dev/null | head -n1)" = "virtiofsd $VIRTIOFSD_VERSION" ]
}
if [ -n "$virtiofsd" ] && ! is_pinned "$virtiofsd"; then
    echo "peers: $virtiofsd is not virtiofsd $VIRTIOFSD_VERSION; using a build of that" >&2
    virtiofsd=
fi
if [ -z "$virtiofsd" ]; then
    root="$target_dir/peers"
    virtiofsd="$root/bin/virtiofsd"
    if [ ! -x "$virtiofsd" ] || ! is_pinned "$virtiofsd"; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                libseccomp-dev libcap-ng-dev pkg-config >/dev/null
        fi
        echo "peers: building virtiofsd $VIRTIOFSD_VERSION from crates.io" >&2
        cargo install --quiet --locked virtiofsd --version "$VIRTIOFSD_VERSION" \
            --root "$root" >&2
    fi
fi
echo "$virtiofsd"
