# Guest checks of the virtio-fs end-to-end test about whose files they are and
# how data reaches the host: a non-root guest user's tree, a set-group-ID
# directory, a set-user-ID file a user truncates and one a user writes, O_DIRECT I/O (dd, and fio with crc32c verification with one request and with 32
# in flight, when the host packed fio into the initramfs) and a host mount inside the share.
# Sourced by workload.sh, which defines run/expect/drop_caches, $M and $G.
#
# The host prepared (see identity-host.sh): $M/users (mode 0777),
# $M/sgid (0:4242, mode 2777) and a tmpfs mounted at $M/tmpfs-mnt holding
# "inside". The guest user is uid 1000, gid 1000, no supplementary groups.

as_user() {
    vfs-probe as 1000 1000 "$@"
}

t_user_tree() {
    as_user sh -c "mkdir $M/users/u1 && mkdir $M/users/u1/sub && echo mine > $M/users/u1/sub/f &&
        ln -s f $M/users/u1/sub/l && mkfifo $M/users/u1/sub/p" ||
        { DETAIL="the user could not build its tree"; return 1; }
    expect owner "$(stat -c %u:%g $M/users/u1/sub/f)" 1000:1000 || return 1
    # A second user may read but not write into it (the host refuses too).
    if vfs-probe as 1001 1001 touch $M/users/u1/sub/intruder 2>/dev/null; then
        DETAIL="uid 1001 wrote into uid 1000's 0755 directory"
        return 1
    fi
    expect content "$(vfs-probe as 1001 1001 cat $M/users/u1/sub/f)" mine
}

t_sgid_create() {
    [ "$HOST_ROOT" = 1 ] || { DETAIL="the host is not root: no directory of another group"; return 3; }
    as_user vfs-probe create $M/sgid/f 2755 || { DETAIL="create in the sgid directory failed"; return 1; }
    as_user mkdir $M/sgid/d || { DETAIL="mkdir in the sgid directory failed"; return 1; }
    drop_caches
    expect file "$(stat -c %u:%g:%a $M/sgid/f)" 1000:4242:755 || return 1
    expect dir "$(stat -c %u:%g $M/sgid/d)" 1000:4242
}

# suid_file NAME: $M/users/NAME, root's, set-user-ID and writable by every user (mode 4777).
suid_file() {
    echo data > $M/users/$1 && chmod 4777 $M/users/$1 ||
        { DETAIL="root could not make a set-user-ID file"; return 1; }
}

t_suid_trunc() {
    suid_file suid-f || return 1
    # open(O_TRUNC) by a user who may not keep S_ISUID clears it (POSIX open, Linux's
    # should_remove_suid); the guest leaves that truncation to the back-end.
    as_user sh -c ": > $M/users/suid-f" || { DETAIL="the user could not truncate it"; return 1; }
    drop_caches
    expect mode "$(stat -c %a:%s $M/users/suid-f)" 777:0
}

t_suid_write() {
    suid_file suid-w || return 1
    # A write by a user who may not keep S_ISUID clears it: the guest clears it itself before
    # a page-cache write, and leaves it to the back-end for a direct one (--cache never).
    as_user sh -c "echo more >> $M/users/suid-w" || { DETAIL="the user could not write it"; return 1; }
    drop_caches
    expect mode "$(stat -c %a $M/users/suid-w)" 777
}

t_odirect() {
    dd if=/dev/urandom of=$M/guest/direct.bin bs=4k count=256 oflag=direct 2>/dev/null ||
        { DETAIL="dd oflag=direct failed"; return 1; }
    # Rewrite a few blocks in place, out of order, as a database would.
    for b in 200 3 77; do
        dd if=/dev/urandom of=$M/guest/direct.bin bs=4k seek=$b count=1 conv=notrunc oflag=direct 2>/dev/null ||
            { DETAIL="dd rewrite of block $b failed"; return 1; }
    done
    direct=$(dd if=$M/guest/direct.bin bs=4k iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    drop_caches
    cached=$(sha256sum < $M/guest/direct.bin | cut -d' ' -f1)
    expect direct-vs-cached "$direct" "$cached" || return 1
    echo "E2E SHA256 direct $direct"
}

t_fio_verify() {
    command -v fio >/dev/null || { DETAIL="fio not in the initramfs"; return 3; }
    out=$(fio --name=dio --filename=$M/guest/fio.bin --size=4M --bs=4k --rw=randwrite \
        --direct=1 --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --randrepeat=0 2>&1) || { DETAIL="fio: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; return 1; }
    echo "E2E INFO fio $(echo "$out" | grep -m1 'write:' | tr -s ' ')"
    # The same with up to 32 requests in flight (libaio over FUSE_ASYNC_DIO): completions that
    # overlap, and may be announced in groups, must none be lost or carry the wrong data.
    out=$(fio --name=deep --filename=$M/guest/fio-deep.bin --size=4M --bs=4k --rw=randwrite         --direct=1 --ioengine=libaio --iodepth=32 --verify=crc32c --do_verify=1         --verify_fatal=1 --randrepeat=0 2>&1) || {
        DETAIL="fio iodepth 32: $(echo "$out" | tail -n 3 | tr '
' ' ')"
        return 1
    }
    echo "E2E INFO fio iodepth 32 $(echo "$out" | grep -m1 'write:' | tr -s ' ')"
}

t_submount() {
    [ "$TMPFS" = 1 ] || { DETAIL="the host mounted no tmpfs in the share"; return 3; }
    expect content "$(cat $M/tmpfs-mnt/inside 2>&1)" tmpfs || return 1
    top=$(stat -c %d $M)
    sub=$(stat -c %d $M/tmpfs-mnt)
    [ "$top" != "$sub" ] || { DETAIL="the tmpfs shows the share's st_dev $top"; return 1; }
    a=$(stat -c %i $M/tmpfs-mnt/inside)
    echo "E2E INFO submount st_dev $top vs $sub, inode $a"
}
