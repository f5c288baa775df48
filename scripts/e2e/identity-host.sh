# Host side of the identity checks (guest side: identity.sh), sourced by
# e2e-virtiofs.sh: prepares the share, packs fio into the initramfs when asked,
# checks owners and data on the host afterwards, and unmounts what it mounted.
# Needs root for chown and mount; without it the checks that need them skip.

IDENTITY_TMPFS=

# prepare_identity SHARE: a world-writable directory for the guest user, a
# set-group-ID directory of a group the user is not in, and a tmpfs mounted
# inside the share.
prepare_identity() {
    local share=$1
    mkdir -p "$share/users" "$share/sgid" "$share/tmpfs-mnt"
    chmod 0777 "$share/users"
    if [ "$(id -u)" = 0 ]; then
        chown 0:4242 "$share/sgid"
        chmod 2777 "$share/sgid"
        if mount -t tmpfs -o size=8m vhu-e2e "$share/tmpfs-mnt"; then
            IDENTITY_TMPFS=$share/tmpfs-mnt
            echo tmpfs > "$share/tmpfs-mnt/inside"
        fi
    fi
}

cleanup_identity() {
    if [ -n "$IDENTITY_TMPFS" ]; then
        umount -l "$IDENTITY_TMPFS" 2>/dev/null || true
        IDENTITY_TMPFS=
    fi
}


h_user_tree() {
    local f
    for f in users/u1 users/u1/sub users/u1/sub/f users/u1/sub/l users/u1/sub/p; do
        expect "$f" "$(stat -c %u:%g "$SHARE/$f" 2>&1)" 1000:1000 || return 1
    done
    exists_not "$SHARE/users/u1/sub/intruder"
}

h_sgid_create() {
    [ "$(id -u)" = 0 ] || { DETAIL="not root: no set-group-ID directory of another group"; return 3; }
    # CVE-2022-0358: the file must not keep S_ISGID for a group its creator is not in.
    expect file "$(stat -c %u:%g:%a "$SHARE/sgid/f" 2>&1)" 1000:4242:755 || return 1
    expect dir "$(stat -c %u:%g:%a "$SHARE/sgid/d" 2>&1)" 1000:4242:2755
}

h_suid_trunc() {
    expect mode "$(stat -c %a:%s "$SHARE/users/suid-f" 2>&1)" 777:0
}

h_suid_write() {
    expect mode "$(stat -c %a "$SHARE/users/suid-w" 2>&1)" 777 || return 1
    expect content "$(cat "$SHARE/users/suid-w" 2>&1 | tr '\n' ' ')" "data more "
}

h_odirect() {
    expect sha256 "$(sha256sum "$SHARE/guest/direct.bin" | cut -d' ' -f1)" "${GUEST_SHA[direct]:-none}" ||
        return 1
    expect size "$(stat -c %s "$SHARE/guest/direct.bin")" $((256 * 4096))
}
