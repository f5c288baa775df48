# The guest side shared by the end-to-end tests (sourced): Debian packages for QEMU, a
# kernel and busybox; the guest kernel and its extracted vmlinux; the kernel modules an
# initramfs needs. Uses the caller's log, die, KERNEL and INSTALL; sets KVER.

# ---- packages --------------------------------------------------------------------
# Installs what is missing, as root, with Debian's apt. On Debian 12 it prefers
# bookworm-backports (QEMU 10 + Linux 6.12): bookworm's own QEMU 7.2 would remove
# the machine's qemu-utils 10 (version conflict on qemu-system-common).

APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
}

apt_install() {
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Adds bookworm-backports to the Debian sources (a file of its own, whatever form the
# others take) when this is bookworm and the suite is not configured yet.
enable_backports() {
    local src=/etc/apt/sources.list.d/vhu-e2e-backports.sources
    grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release || return 1
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports ($src)"
        printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
            'Suites: bookworm-backports' 'Components: main' \
            'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > "$src"
        APT_UPDATED=0
    fi
    apt_update_once
    # Not `apt-cache policy ... | grep -q`: under pipefail, grep leaving early makes
    # apt-cache die of SIGPIPE and the test fail by chance.
    local policy
    policy=$(apt-cache policy qemu-system-x86)
    [[ $policy == *bookworm-backports* ]]
}

is_static_busybox() {
    local out
    [ -x /bin/busybox ] || return 1
    out=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
    [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]]
}

# Installs QEMU, a kernel, static busybox and the initramfs tools when missing, with
# the packages given as arguments (already known to be missing).
ensure_guest_packages() {
    local missing=("$@")
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    compgen -G '/boot/vmlinuz-*' >/dev/null || [ -n "$KERNEL" ] || missing+=(linux-image-amd64)
    is_static_busybox || missing+=(busybox-static)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v modprobe >/dev/null || missing+=(kmod)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v xz >/dev/null || missing+=(xz-utils)
    [ ${#missing[@]} -eq 0 ] && return 0

    if [ "$INSTALL" != 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        die "missing packages: ${missing[*]} (install them, or run as root without --no-install)"
    fi
    local p had_qemu_utils=0
    dpkg-query -W -f='${Status}' qemu-utils 2>/dev/null | grep -q 'ok installed' && had_qemu_utils=1
    if enable_backports; then
        # QEMU and the kernel as a pair from backports. `-t` (not `pkg/suite`) is
        # needed: their dependencies (qemu-system-common, qemu-system-data,
        # seabios, ...) must come from the same suite, which `pkg/suite` alone
        # does not select.
        local bpo=() plain=()
        for p in "${missing[@]}"; do
            case $p in
                qemu-system-x86|linux-image-amd64) bpo+=("$p") ;;
                *) plain+=("$p") ;;
            esac
        done
        [ ${#plain[@]} -eq 0 ] || apt_install "${plain[@]}"
        [ ${#bpo[@]} -eq 0 ] || apt_install -t bookworm-backports "${bpo[@]}"
    else
        apt_update_once
        apt_install "${missing[@]}"
        # Installing a distribution QEMU can remove a newer qemu-utils: put it back.
        if [ "$had_qemu_utils" = 1 ] && ! command -v qemu-img >/dev/null; then
            apt_install qemu-utils
        fi
    fi
    is_static_busybox || die "/bin/busybox is not static after installing busybox-static"
}


# ---- guest kernel and modules ----------------------------------------------------

pick_kernel() {
    if [ -z "$KERNEL" ]; then
        KERNEL=$(printf '%s\n' /boot/vmlinuz-* | sort -V | tail -n 1)
    fi
    [ -r "$KERNEL" ] || die "no readable guest kernel (${KERNEL:-none}); use --kernel"
    KVER=${KERNEL##*/vmlinuz-}
    [ -d "${E2E_MODULES_ROOT:-}/lib/modules/$KVER" ] ||
        die "no ${E2E_MODULES_ROOT:-}/lib/modules/$KVER for kernel $KERNEL"
}

# Extracts the uncompressed vmlinux from a bzImage: the payload starts at a
# compression magic (zstd, xz or gzip); try each hit until the result is an ELF
# file. QEMU boots it directly through the PVH entry (CONFIG_PVH), which skips
# the slow in-guest decompression under TCG.
extract_vmlinux() {
    local bz=$1 out=$2 magic tool off
    for spec in '\x28\xb5\x2f\xfd zstd' '\xfd\x37\x7a\x58\x5a\x00 xz' '\x1f\x8b\x08 gzip'; do
        magic=${spec% *}
        tool=${spec#* }
        command -v "$tool" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "$magic" "$bz" 2>/dev/null | cut -d: -f1); do
            # Trailing bytes after the compressed stream make the tool complain;
            # the decompressed prefix is still complete.
            tail -c +$((off + 1)) "$bz" | "$tool" -dc 2>/dev/null > "$out" || true
            if [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] &&
                [ "$(stat -c %s "$out")" -gt 1000000 ]; then
                return 0
            fi
        done
    done
    rm -f "$out"
    return 1
}

# Lists (in load order) the module files the guest needs for the modules named as
# arguments, as computed by modprobe from the kernel's modules.dep (under
# E2E_MODULES_ROOT/lib/modules when set, for a kernel unpacked elsewhere). Modules that are
# built into the kernel print "builtin" and need nothing.
guest_modules() {
    local m kind path rest
    for m in "$@"; do
        modprobe ${E2E_MODULES_ROOT:+-d "$E2E_MODULES_ROOT"} -S "$KVER" --show-depends "$m" ||
            die "modprobe -S $KVER --show-depends $m failed"
    done | while read -r kind path rest; do
        [ "$kind" = insmod ] && echo "$path"
    done | awk '!seen[$0]++'
}

# Copies the module files of the modules named after STAGE into STAGE/lib/modules,
# decompressed (busybox insmod loads plain .ko files), and lists them in load order in
# STAGE/modules.list for the guest's /init.
pack_modules() {
    local stage=$1 mod name
    shift
    mkdir -p "$stage/lib/modules"
    : > "$stage/modules.list"
    while read -r mod; do
        [ -n "$mod" ] || continue
        name=$(basename "$mod")
        case $name in
            *.ko.xz) xz -dc "$mod" > "$stage/lib/modules/${name%.xz}"; name=${name%.xz} ;;
            *.ko.zst) zstd -qdc "$mod" > "$stage/lib/modules/${name%.zst}"; name=${name%.zst} ;;
            *.ko.gz) gzip -dc "$mod" > "$stage/lib/modules/${name%.gz}"; name=${name%.gz} ;;
            *.ko) cp "$mod" "$stage/lib/modules/$name" ;;
            *) die "unexpected module file $mod" ;;
        esac
        echo "$name" >> "$stage/modules.list"
    done < <(guest_modules "$@")
}

# ---- initramfs -------------------------------------------------------------------

# Lays out a minimal initramfs in STAGE: static busybox, the shared /init, WORKLOAD as the
# /workload.sh that /init runs, and the modules named after it (with their dependencies).
stage_initramfs() {
    local stage=$1 workload=$2
    shift 2
    mkdir -p "$stage"/{bin,dev,proc,sys,mnt,tmp}
    cp /bin/busybox "$stage/bin/busybox"
    cp "$E2E/init" "$stage/init"
    cp "$workload" "$stage/workload.sh"
    chmod 755 "$stage/init"
    pack_modules "$stage" "$@"
}

# Writes STAGE as an uncompressed newc cpio to OUT (it boots faster under TCG than a
# compressed one).
pack_initramfs() {
    (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) > "$2"
}

# pack_fio STAGE: copies fio and every library it loads into the initramfs
# staging directory, at the same paths, so the guest can run it.
pack_fio() {
    local stage=$1 fio lib
    fio=$(command -v fio) || return 1
    mkdir -p "$stage/bin"
    cp "$fio" "$stage/bin/fio"
    for lib in $(ldd "$fio" | grep -oE '/[^ ]+\.so[^ ]*'); do
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}
