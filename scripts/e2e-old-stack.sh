#!/usr/bin/env bash
# The guest end-to-end test (scripts/e2e-virtiofs.sh) on the oldest stack vhu-fsd is meant
# for: Debian 12's own QEMU 7.2 and Linux 6.1 (bookworm, not its backports), unpacked into a
# temporary directory beside whatever QEMU and kernel the host has installed, so a host with
# newer ones checks the old ones too. Nothing is installed in their place: their packages are
# downloaded and unpacked; only the shared libraries QEMU 7.2 links are installed when missing.
#
#   scripts/e2e-old-stack.sh [options of scripts/e2e-virtiofs.sh]
#
# Needs Debian's apt with the bookworm suite in its sources, and root (apt-get update and the
# libraries). Exits 0 without running when not root, saying so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { echo "e2e-old-stack: $*"; }
die() { echo "e2e-old-stack: $*" >&2; exit 2; }

if [ "$(id -u)" != 0 ]; then
    log "skipped: downloading Debian 12's QEMU and kernel needs root (apt-get update)"
    exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs Debian's apt"

work=$(mktemp -d /tmp/vhu-old-stack.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

apt-get update -qq
# The suite's own versions (`package/bookworm`), never backports' or security's newer ones.
log "downloading QEMU 7.2 and Linux 6.1 from bookworm"
apt-get download -qq qemu-system-x86/bookworm qemu-system-common/bookworm \
    qemu-system-data/bookworm linux-image-amd64/bookworm ||
    die "apt-get download from bookworm failed (is bookworm in the apt sources?)"
# The metapackage names the kernel of the suite's ABI; the first alternative is the signed one.
kernel_pkg=$(dpkg-deb -f linux-image-amd64_*.deb Depends | sed 's/[ (|,].*//')
[ -n "$kernel_pkg" ] || die "no kernel named by linux-image-amd64"
apt-get download -qq "$kernel_pkg/bookworm" || die "apt-get download $kernel_pkg"

mkdir -p qemu kernel bin
for deb in qemu-system-*.deb; do dpkg-deb -x "$deb" qemu; done
dpkg-deb -x "$kernel_pkg"_*.deb kernel
kernel_image=$(printf '%s\n' kernel/boot/vmlinuz-* | head -n 1)
[ -r "$kernel_image" ] || die "no kernel image in $kernel_pkg"
kver=${kernel_image##*/vmlinuz-}
# The package ships no module index: its postinst makes one.
depmod -b "$work/kernel" "$kver"

# QEMU 7.2's libraries other than QEMU's own packages (which the installed QEMU provides newer).
libs=$(dpkg-deb -f qemu-system-x86_*.deb Depends | tr ',' '\n' | sed 's/|.*//; s/(.*//; s/ //g' |
    grep -v '^qemu-' | grep -v '^$' || true)
if [ -n "$libs" ]; then
    # shellcheck disable=SC2086 # one package name per word
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $libs >/dev/null
fi

# `qemu-system-x86_64` for the e2e: 7.2's binary with its own firmware and modules (the
# installed QEMU's modules do not load into it).
cat > bin/qemu-system-x86_64 <<EOF
#!/bin/sh
QEMU_MODULE_DIR=$work/qemu/usr/lib/x86_64-linux-gnu/qemu exec $work/qemu/usr/bin/qemu-system-x86_64 \\
    -L $work/qemu/usr/share/qemu -L /usr/share/seabios -L /usr/share/qemu "\$@"
EOF
chmod +x bin/qemu-system-x86_64
"$work/bin/qemu-system-x86_64" --version | head -n 1 | grep -q 'version 7\.2' ||
    die "the unpacked QEMU does not run: $("$work/bin/qemu-system-x86_64" --version 2>&1 | head -n 1)"

log "QEMU $("$work/bin/qemu-system-x86_64" --version | head -n 1 | awk '{print $4}'), Linux $kver"
cd "$ROOT"
PATH="$work/bin:$PATH" E2E_MODULES_ROOT="$work/kernel" \
    bash scripts/e2e-virtiofs.sh --kernel "$work/$kernel_image" --no-install "$@"
