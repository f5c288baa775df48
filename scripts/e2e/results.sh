# Results of the end-to-end test (sourced by e2e-virtiofs.sh): recording verdicts,
# reading the guest's console, and the host-side checks of what the guest did. Uses
# the main script's WORK, SHARE, SECRET, MARKER_NAME, HOST_BIG_SHA256 and LIBVIRT.

PASSED=0
FAILED=0
SKIPPED=0
declare -A GUEST_VERDICT=() GUEST_DETAIL=() GUEST_SHA=() GUEST_VALUE=()

record() { # record VERDICT NAME [DETAIL]
    case $1 in
        PASS) PASSED=$((PASSED + 1)); echo "PASS $2" ;;
        SKIP) SKIPPED=$((SKIPPED + 1)); echo "SKIP $2: ${3:-}" ;;
        *) FAILED=$((FAILED + 1)); echo "FAIL $2: ${3:-}" ;;
    esac
}

# Every check the guest workload reports; a missing one is a failure.
GUEST_CHECKS=(mount host-file host-big-read create write-read append truncate rename
    hardlink symlink mkdir rmdir unlink readdir-1000 chmod chown mtime stat mkfifo
    statfs fsync xattr big-write big-readback escape-dotdot escape-symlink-rel
    escape-symlink-abs escape-symlink-dir escape-symlink-write user-tree sgid-create suid-trunc
    suid-write odirect fio-verify submount locks-host-held locks-guest-held umount)

parse_console() {
    local line kind name rest
    while IFS= read -r line; do
        line=${line%$'\r'}
        read -r _ kind name rest <<< "$line"
        case $kind in
            PASS|FAIL|SKIP) GUEST_VERDICT[${name:-?}]=$kind; GUEST_DETAIL[${name:-?}]=$rest ;;
            SHA256) GUEST_SHA[${name:-?}]=${rest%% *} ;;
            VALUE) GUEST_VALUE[${name:-?}]=${rest%% *} ;;
        esac
    done < <(grep -aoE 'E2E (PASS|FAIL|SKIP|SHA256|VALUE) .*' "$WORK/console.log" || true)
}

report_guest() {
    local name
    if grep -aq 'E2E BOOT' "$WORK/console.log"; then
        record PASS guest/boot
    else
        record FAIL guest/boot "the guest never reached /init"
    fi
    for name in "${GUEST_CHECKS[@]}"; do
        if [ -n "${GUEST_VERDICT[$name]:-}" ]; then
            record "${GUEST_VERDICT[$name]}" "guest/$name" "${GUEST_DETAIL[$name]}"
        else
            record FAIL "guest/$name" "no result from the guest"
        fi
    done
    if grep -aq 'E2E DONE' "$WORK/console.log"; then
        record PASS guest/done
    else
        record FAIL guest/done "the workload did not finish"
    fi
}

# Host-side checks: each h_NAME returns 0 (pass), 1 (fail, $DETAIL) or 3 (skip).
G() { echo "$SHARE/guest/$1"; }
expect() { # expect WHAT GOT WANT
    [ "$2" = "$3" ] && return 0
    DETAIL="$1: got '$2' want '$3'"
    return 1
}
exists_not() {
    if [ -e "$1" ] || [ -L "$1" ]; then DETAIL="$1 exists"; return 1; fi
}

h_create() { expect size "$(stat -c %s "$(G created)" 2>&1)" 0; }
h_write_read() {
    expect content "$(od -An -c "$(G data)" 2>&1 | tr -s ' \n' ' ')" \
        "$(printf 'line1\nline2\n' | od -An -c | tr -s ' \n' ' ')"
}
h_truncate() {
    expect size "$(stat -c %s "$(G trunc)" 2>&1)" 4096 || return 1
    expect head "$(head -c 3 "$(G trunc)")" tru || return 1
    expect zeros "$(tail -c 4093 "$(G trunc)" | tr -d '\000' | wc -c)" 0
}
h_rename() {
    exists_not "$(G torename)" || return 1
    expect renamed "$(cat "$(G renamed)" 2>&1)" moving || return 1
    expect replaced "$(cat "$(G victim)" 2>&1)" new || return 1
    exists_not "$(G replacer)" || return 1
    exists_not "$(G srcdir)" || return 1
    expect moved-dir "$(cat "$(G dstdir/moved/file)" 2>&1)" inside
}
h_hardlink() {
    expect nlink "$(stat -c %h "$(G data2)" 2>&1)" 2 || return 1
    expect inode "$(stat -c %i "$(G hardlink)" 2>&1)" "$(stat -c %i "$(G data2)" 2>&1)" || return 1
    expect content "$(cat "$(G data2)")" "$(printf 'linked\nmore')"
}
h_symlink() {
    expect readlink "$(readlink "$(G symlink)")" data2 || return 1
    expect readlink-abs "$(readlink "$(G abs-link)")" /etc/passwd
}
h_mkdir() { [ -d "$(G d1/d2/d3)" ] || { DETAIL="d1/d2/d3 is not a directory"; return 1; }; }
h_rmdir() {
    exists_not "$(G gone)" || return 1
    [ -d "$(G d1)" ] || { DETAIL="non-empty d1 was removed"; return 1; }
}
h_unlink() { exists_not "$(G unlinked)" && exists_not "$(G open-unlinked)"; }
h_readdir_1000() {
    local dir i
    dir=$(G many)
    expect count "$(ls -A "$dir" 2>&1 | wc -l)" 1000 || return 1
    for ((i = 0; i < 1000; i++)); do
        [ -f "$dir/f$i" ] || { DETAIL="f$i missing"; return 1; }
    done
}
h_chmod() { expect mode "$(stat -c %a "$(G mode)" 2>&1)" 640; }
h_chown() { expect owner "$(stat -c %u:%g "$(G owned)" 2>&1)" 1234:5678; }
h_mtime() { expect mtime "$(stat -c %Y "$(G timed)" 2>&1)" "$(date -u -d '2001-02-03 04:05:06' +%s)"; }
h_mkfifo() { [ -p "$(G fifo)" ] || { DETAIL="not a fifo on the host"; return 1; }; }
h_fsync() { expect content "$(cat "$(G synced)" 2>&1)" durable; }
h_statfs() {
    local b s
    read -r b s < <(stat -f -c '%b %S' "$SHARE")
    expect total-bytes "${GUEST_VALUE[statfs-total]:-none}" "$((b * s))"
}
h_xattr() {
    [ "${GUEST_VERDICT[xattr]:-}" = SKIP ] && { DETAIL="skipped in the guest"; return 3; }
    [ -x "$WORK/vfs-probe" ] || { DETAIL="no xattr tool"; return 3; }
    if [[ " $LIBVIRT " == *" xattr=off "* ]]; then
        if "$WORK/vfs-probe" getx "$(G xattr)" user.e2e.tmp >/dev/null 2>&1; then
            DETAIL="an attribute reached the host with xattrs off"
            return 1
        fi
        return 0
    fi
    expect user.e2e.keep "$("$WORK/vfs-probe" getx "$(G xattr)" user.e2e.keep 2>&1)" kept-value || return 1
    if "$WORK/vfs-probe" getx "$(G xattr)" user.e2e.tmp >/dev/null 2>&1; then
        DETAIL="removed attribute user.e2e.tmp still on the host"
        return 1
    fi
}
h_big_sha256() {
    expect size "$(stat -c %s "$(G big)" 2>&1)" 67108864 || return 1
    expect sha256 "$(sha256sum "$(G big)" | cut -d' ' -f1)" "${GUEST_SHA[big]:-none}"
}
h_escape_no_leak() {
    if grep -aqF "$SECRET" "$WORK/console.log"; then
        DETAIL="the host secret appeared on the guest console"
        return 1
    fi
    expect secret-file "$(cat "$WORK/secret.txt")" "$SECRET" || return 1
    expect outside-target "$(cat "$WORK/outside-target.txt")" HOST-ORIGINAL || return 1
    exists_not "$WORK/created-by-guest" || return 1
    [ -f "$WORK/$MARKER_NAME" ] || { DETAIL="marker file next to the share vanished"; return 1; }
    # Nothing outside the share but what the harness itself put there.
    local f extra=""
    for f in "$WORK"/* "$WORK"/.[!.]*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        case ${f##*/} in
            share|share,*|initramfs|initrd.cpio|vmlinux|vfs-probe|console.log|backend.log|qemu.out) ;;
            domain.xml) ;;
            vhost.sock*|secret.txt|outside-target.txt|"$MARKER_NAME") ;;
            *) extra+=" ${f##*/}" ;;
        esac
    done
    [ -z "$extra" ] || { DETAIL="unexpected files next to the share:$extra"; return 1; }
}

HOST_CHECKS=(create write-read truncate rename hardlink symlink mkdir rmdir unlink
    readdir-1000 chmod chown mtime mkfifo fsync statfs xattr big-sha256 escape-no-leak
    user-tree sgid-create suid-trunc suid-write odirect)

report_host() {
    local name rc
    for name in "${HOST_CHECKS[@]}"; do
        DETAIL=""
        rc=0
        if [ -d "$SHARE/guest" ]; then
            "h_${name//-/_}" || rc=$?
        else
            DETAIL="the guest created nothing in the share"
            rc=1
        fi
        case $rc in
            0) record PASS "host/$name" ;;
            3) record SKIP "host/$name" "$DETAIL" ;;
            *) record FAIL "host/$name" "$DETAIL" ;;
        esac
    done
}

