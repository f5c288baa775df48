# Guest workload of the virtio-fs end-to-end test, run by /init with busybox sh.
#
# It mounts the virtio-fs share and exercises real file operations through it.
# Every check prints exactly one machine-readable line on the console:
#   E2E PASS <name>
#   E2E FAIL <name> <detail>
#   E2E SKIP <name> <reason>
# Other lines the host reads: "E2E SHA256 <name> <hex>" (checksums it compares
# with its own), "E2E VALUE <name> <value>" (values it compares), "E2E INFO ..."
# (free text), "E2E TIME <name> <start> <end>" (guest uptime around each check)
# and "E2E DONE" at the very end. The host knows the full list of
# check names and counts a missing one as a failure.
#
# /e2e.conf (written by the host) sets TAG, WORK (the host's temp dir path),
# MARKER_NAME (a file name that exists only on the host, next to the share),
# HOST_BIG_SHA256 (checksum of a file the host put in the share).

. /e2e.conf

M=/mnt
G=$M/guest            # everything the guest creates lives here
DETAIL=""

# run NAME: call t_NAME and print its verdict (under NAME with '_' shown as '-'). t_NAME returns 0 (pass),
# 1 (fail, with $DETAIL) or 3 (skip, with $DETAIL as the reason).
run() {
    DETAIL=""
    read -r t0 _ < /proc/uptime
    "t_$1"
    rc=$?
    read -r t1 _ < /proc/uptime
    name=$(echo "$1" | tr _ -)
    echo "E2E TIME $name $t0 $t1"
    case $rc in
        0) echo "E2E PASS $name" ;;
        3) echo "E2E SKIP $name ${DETAIL:-skipped}" ;;
        *) echo "E2E FAIL $name ${DETAIL:-returned $rc}" ;;
    esac
}

# expect WHAT GOT WANT: compare two strings, setting DETAIL on a mismatch.
expect() {
    if [ "$2" = "$3" ]; then return 0; fi
    DETAIL="$1: got '$2' want '$3'"
    return 1
}

drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# ---- mount ---------------------------------------------------------------

t_mount() {
    mount -t virtiofs "$TAG" "$M" || { DETAIL="mount -t virtiofs $TAG failed"; return 1; }
    grep -q "^$TAG $M virtiofs " /proc/mounts || { DETAIL="not in /proc/mounts: $(grep " $M " /proc/mounts)"; return 1; }
    mkdir "$G" || { DETAIL="mkdir $G failed"; return 1; }
}

# ---- files the host put in the share ---------------------------------------

t_host_file() {
    expect host-file.txt "$(cat $M/host-file.txt)" "hello from the host" || return 1
    expect host-dir/nested.txt "$(cat $M/host-dir/nested.txt)" "nested" || return 1
}

t_host_big_read() {
    sum=$(sha256sum $M/host-big.bin | cut -d' ' -f1)
    expect sha256 "$sum" "$HOST_BIG_SHA256"
}

# ---- basic file operations -------------------------------------------------

t_create() {
    : > $G/created || { DETAIL="create failed"; return 1; }
    [ -f $G/created ] || { DETAIL="not a regular file"; return 1; }
    expect size "$(stat -c %s $G/created)" 0
}

t_write_read() {
    printf 'line1\n' > $G/data || { DETAIL="write failed"; return 1; }
    expect content "$(cat $G/data)" "line1" || return 1
    # Read it again from the back-end, not from the guest page cache.
    drop_caches
    expect content-after-drop "$(cat $G/data)" "line1"
}

t_append() {
    printf 'line2\n' >> $G/data || { DETAIL="append failed"; return 1; }
    drop_caches
    expect content "$(cat $G/data)" "$(printf 'line1\nline2')" || return 1
    expect size "$(stat -c %s $G/data)" 12
}

t_truncate() {
    printf 'truncate me\n' > $G/trunc
    truncate -s 3 $G/trunc || { DETAIL="shrink failed"; return 1; }
    expect shrunk "$(cat $G/trunc)" "tru" || return 1
    truncate -s 4096 $G/trunc || { DETAIL="extend failed"; return 1; }
    drop_caches
    expect size "$(stat -c %s $G/trunc)" 4096 || return 1
    expect head "$(head -c 3 $G/trunc)" "tru" || return 1
    # The extended part reads back as zeros.
    expect tail "$(tail -c 4093 $G/trunc | tr -d '\000' | wc -c)" 0
}

t_rename() {
    printf 'moving\n' > $G/torename
    mv $G/torename $G/renamed || { DETAIL="rename failed"; return 1; }
    [ ! -e $G/torename ] || { DETAIL="old name still exists"; return 1; }
    expect renamed "$(cat $G/renamed)" "moving" || return 1
    # Rename onto an existing file replaces it.
    printf 'old\n' > $G/victim
    printf 'new\n' > $G/replacer
    mv -f $G/replacer $G/victim || { DETAIL="rename-over failed"; return 1; }
    expect replaced "$(cat $G/victim)" "new" || return 1
    # Rename of a directory into another directory.
    mkdir -p $G/srcdir $G/dstdir
    printf 'inside\n' > $G/srcdir/file
    mv $G/srcdir $G/dstdir/moved || { DETAIL="rename dir failed"; return 1; }
    expect moved-dir "$(cat $G/dstdir/moved/file)" "inside"
}

t_hardlink() {
    printf 'linked\n' > $G/data2
    ln $G/data2 $G/hardlink || { DETAIL="link failed"; return 1; }
    expect nlink "$(stat -c %h $G/data2)" 2 || return 1
    expect inode "$(stat -c %i $G/hardlink)" "$(stat -c %i $G/data2)" || return 1
    printf 'more\n' >> $G/hardlink
    drop_caches
    expect through-other-name "$(cat $G/data2)" "$(printf 'linked\nmore')"
}

t_symlink() {
    ln -s data2 $G/symlink || { DETAIL="symlink failed"; return 1; }
    expect readlink "$(readlink $G/symlink)" "data2" || return 1
    [ -L $G/symlink ] || { DETAIL="not a symlink"; return 1; }
    expect follow "$(cat $G/symlink)" "$(printf 'linked\nmore')" || return 1
    # An absolute link is stored verbatim, not resolved.
    ln -s /etc/passwd $G/abs-link || { DETAIL="absolute symlink failed"; return 1; }
    expect readlink-abs "$(readlink $G/abs-link)" "/etc/passwd"
}

t_mkdir() {
    mkdir -p $G/d1/d2/d3 || { DETAIL="mkdir -p failed"; return 1; }
    [ -d $G/d1/d2/d3 ] || { DETAIL="not a directory"; return 1; }
    expect type "$(stat -c %F $G/d1/d2)" "directory"
}

t_rmdir() {
    mkdir $G/gone && rmdir $G/gone || { DETAIL="mkdir+rmdir failed"; return 1; }
    [ ! -e $G/gone ] || { DETAIL="still exists"; return 1; }
    # A non-empty directory must not be removed.
    if rmdir $G/d1 2>/dev/null; then DETAIL="removed a non-empty directory"; return 1; fi
    [ -d $G/d1 ] || { DETAIL="non-empty directory vanished"; return 1; }
}

t_unlink() {
    printf 'bye\n' > $G/unlinked
    rm $G/unlinked || { DETAIL="unlink failed"; return 1; }
    [ ! -e $G/unlinked ] || { DETAIL="still exists"; return 1; }
    # A file stays readable through an open descriptor after its last name goes.
    printf 'still here\n' > $G/open-unlinked
    exec 3< $G/open-unlinked
    rm $G/open-unlinked
    got=$(cat <&3)
    exec 3<&-
    expect open-after-unlink "$got" "still here"
}

t_readdir_1000() {
    mkdir $G/many || { DETAIL="mkdir failed"; return 1; }
    i=0
    while [ $i -lt 1000 ]; do
        : > $G/many/f$i || { DETAIL="create f$i failed"; return 1; }
        i=$((i + 1))
    done
    drop_caches
    expect count "$(ls -A $G/many | wc -l)" 1000 || return 1
    expect distinct "$(ls -A $G/many | sort -u | wc -l)" 1000 || return 1
    [ -e $G/many/f0 ] && [ -e $G/many/f999 ] || { DETAIL="f0 or f999 missing"; return 1; }
    # Dot entries are listed too.
    expect with-dots "$(ls -a $G/many | wc -l)" 1002
}

t_chmod() {
    printf 'mode\n' > $G/mode
    chmod 640 $G/mode || { DETAIL="chmod failed"; return 1; }
    drop_caches
    expect mode "$(stat -c %a $G/mode)" 640 || return 1
    chmod 4755 $G/mode || { DETAIL="chmod 4755 failed"; return 1; }
    expect setuid-mode "$(stat -c %a $G/mode)" 4755 || return 1
    chmod 640 $G/mode
}

t_chown() {
    printf 'owner\n' > $G/owned
    chown 1234:5678 $G/owned || { DETAIL="chown failed"; return 1; }
    drop_caches
    expect owner "$(stat -c %u:%g $G/owned)" "1234:5678"
}

t_mtime() {
    printf 'time\n' > $G/timed
    touch -d "2001-02-03 04:05:06" $G/timed || { DETAIL="touch -d failed"; return 1; }
    drop_caches
    expect mtime "$(stat -c %Y $G/timed)" "$(date -u -d '2001-02-03 04:05:06' +%s)"
}

t_stat() {
    expect type-file "$(stat -c %F $G/data)" "regular file" || return 1
    expect type-dir "$(stat -c %F $G)" "directory" || return 1
    expect type-link "$(stat -c %F $G/symlink)" "symbolic link" || return 1
    expect size "$(stat -c %s $G/data)" 12 || return 1
    [ "$(stat -c %i $G/data)" != "$(stat -c %i $G/data2)" ] || { DETAIL="two files share an inode number"; return 1; }
}

t_mkfifo() {
    mkfifo $G/fifo || { DETAIL="mkfifo failed"; return 1; }
    expect type "$(stat -c %F $G/fifo)" "fifo"
}

t_statfs() {
    out=$(stat -f -c '%b %S %a %f' $M) || { DETAIL="stat -f failed"; return 1; }
    # shellcheck disable=SC2086 # split into the four numbers
    set -- $out
    [ "$1" -gt 0 ] && [ "$2" -gt 0 ] || { DETAIL="zero blocks or block size: $out"; return 1; }
    df $M > /dev/null || { DETAIL="df failed"; return 1; }
    # Total size in bytes; the host compares it with its own statfs of the share.
    echo "E2E VALUE statfs-total $(( $1 * $2 ))"
}

t_fsync() {
    printf 'durable\n' > $G/synced
    sync $G/synced || { DETAIL="fsync (sync FILE) failed"; return 1; }
    sync -d $G/synced || { DETAIL="fdatasync (sync -d FILE) failed"; return 1; }
    sync -f $G/synced || { DETAIL="syncfs (sync -f FILE) failed"; return 1; }
    if [ -x /bin/vfs-probe ]; then
        vfs-probe fsync $G/synced || { DETAIL="vfs-probe fsync failed"; return 1; }
    fi
    sync || { DETAIL="sync failed"; return 1; }
}

t_xattr() {
    [ -x /bin/vfs-probe ] || { DETAIL="no xattr tool in the guest (no C compiler on the host)"; return 3; }
    printf 'attrs\n' > $G/xattr
    vfs-probe setx $G/xattr user.e2e.tmp temporary 2>/tmp/xerr
    rc=$?
    if [ "${XATTR:-1}" = 0 ]; then
        # Extended attributes are off: the back-end refuses them.
        [ $rc -eq 3 ] || { DETAIL="setxattr with xattrs off: rc $rc ($(cat /tmp/xerr))"; return 1; }
        return 0
    fi
    if [ $rc -eq 3 ]; then DETAIL="xattrs not supported by the back-end ($(cat /tmp/xerr))"; return 3; fi
    [ $rc -eq 0 ] || { DETAIL="setxattr: $(cat /tmp/xerr)"; return 1; }
    vfs-probe setx $G/xattr user.e2e.keep kept-value || { DETAIL="second setxattr failed"; return 1; }
    drop_caches
    expect get "$(vfs-probe getx $G/xattr user.e2e.tmp)" "temporary" || return 1
    vfs-probe listx $G/xattr | grep -qx user.e2e.keep || { DETAIL="listxattr lacks user.e2e.keep: $(vfs-probe listx $G/xattr | tr '\n' ' ')"; return 1; }
    vfs-probe rmx $G/xattr user.e2e.tmp || { DETAIL="removexattr failed"; return 1; }
    if vfs-probe getx $G/xattr user.e2e.tmp 2>/dev/null; then DETAIL="removed attribute still readable"; return 1; fi
    return 0
}

# ---- a 64 MiB file ---------------------------------------------------------

t_big_write() {
    dd if=/dev/urandom of=$G/big bs=1M count=64 2>/tmp/dderr || { DETAIL="dd: $(cat /tmp/dderr)"; return 1; }
    sync $G/big
    expect size "$(stat -c %s $G/big)" 67108864 || return 1
    sum=$(sha256sum $G/big | cut -d' ' -f1)
    echo "E2E SHA256 big $sum"
}

t_big_readback() {
    before=$(sha256sum $G/big | cut -d' ' -f1)
    drop_caches
    after=$(sha256sum $G/big | cut -d' ' -f1)
    expect sha256-after-drop "$after" "$before"
}

# ---- escape attempts ---------------------------------------------------------
# The host placed, next to the share, a file named $MARKER_NAME and a secret file
# whose content the guest never learns; in the share it placed symbolic links
# pointing outside of it. The guest must only ever see its own file system
# outside /mnt. The initramfs holds guest-side files at the same paths, with
# content "GUEST-VIEW ...", so a link followed in the guest's view reads those.

t_escape_dotdot() {
    listing=$(ls -a $M/.. | tr '\n' ' ')
    echo "E2E INFO ls /mnt/.. = $listing"
    case " $listing " in *" $MARKER_NAME "*) DETAIL="host parent directory visible"; return 1 ;; esac
    case " $listing " in *" init "*) ;; *) DETAIL="/mnt/.. is not the guest root"; return 1 ;; esac
    if cat "$M/../$MARKER_NAME" 2>/dev/null; then DETAIL="read host marker via /mnt/.."; return 1; fi
    if cat "$M/../../$MARKER_NAME" 2>/dev/null; then DETAIL="read host marker via /mnt/../.."; return 1; fi
    cd $M/guest/../.. || { DETAIL="cd /mnt/guest/../.. failed"; return 1; }
    where=$(pwd)
    cd /
    expect "cd /mnt/guest/../.." "$where" / || return 1
    # Writing into /mnt/.. creates a file in the guest root, not on the host.
    echo guest > $M/../created-by-guest || { DETAIL="write to /mnt/.. failed"; return 1; }
    [ -f /created-by-guest ] || { DETAIL="write to /mnt/.. did not land in the guest root"; return 1; }
}

t_escape_symlink_rel() {
    # Read first and show it, so that the host also sees any leaked content.
    got=$(cat $M/escape-rel 2>&1 | head -c 200)
    echo "E2E INFO escape-rel read: $got"
    expect readlink "$(readlink $M/escape-rel 2>&1)" "../secret.txt" || return 1
    expect content "$got" "GUEST-VIEW rel"
}

t_escape_symlink_abs() {
    # Read first and show it, so that the host also sees any leaked content.
    got=$(cat $M/escape-abs 2>&1 | head -c 200)
    echo "E2E INFO escape-abs read: $got"
    expect readlink "$(readlink $M/escape-abs 2>&1)" "$WORK/secret.txt" || return 1
    expect content "$got" "GUEST-VIEW abs"
}

t_escape_symlink_dir() {
    listing=$(ls -a $M/escape-dir/ 2>&1 | tr '\n' ' ')
    echo "E2E INFO ls escape-dir/ = $listing"
    case " $listing " in *" $MARKER_NAME "*) DETAIL="host directory listed through the link"; return 1 ;; esac
    got=$(cat $M/escape-dir/secret.txt 2>&1 | head -c 200)
    echo "E2E INFO escape-dir/secret.txt read: $got"
    expect content "$got" "GUEST-VIEW abs"
}

t_escape_symlink_write() {
    echo "GUEST-WROTE" > $M/escape-write 2>/tmp/werr || { DETAIL="write through link failed: $(cat /tmp/werr)"; return 1; }
    # The write landed on the guest's own file at that path.
    expect guest-file "$(cat "$WORK/outside-target.txt")" "GUEST-WROTE"
}

# ---- identity, O_DIRECT, submounts (identity.sh) -------------------------------

. /identity.sh
. /locks.sh

# ---- unmount -----------------------------------------------------------------

t_umount() {
    sync
    umount $M || { DETAIL="umount failed"; return 1; }
    ! grep -q " $M virtiofs " /proc/mounts || { DETAIL="still mounted"; return 1; }
}

# ---- run everything ----------------------------------------------------------

run mount
if grep -q " $M virtiofs " /proc/mounts; then
    for t in host_file host_big_read create write_read append truncate rename hardlink \
             symlink mkdir rmdir unlink readdir_1000 chmod chown mtime stat mkfifo \
             statfs fsync xattr big_write big_readback \
             escape_dotdot escape_symlink_rel escape_symlink_abs escape_symlink_dir \
             escape_symlink_write user_tree sgid_create suid_trunc suid_write odirect fio_verify submount \
             locks_host_held locks_guest_held umount; do
        run "$t"
    done
else
    echo "E2E INFO share not mounted, skipping all file checks"
fi
echo "E2E DONE"
