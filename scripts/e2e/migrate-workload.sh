# The guest side of the live-migration test (run by /init; scripts/e2e-migrate.sh is the
# host side). Mounts the share, keeps a working directory and open descriptors in it, writes
# and fsyncs a checksummed file, then keeps writing until the host says the migration is over
# (the file "migrated" appears in the share), and checks that nothing it held was lost: the
# old descriptors still read and write, the working directory still resolves, every byte it
# wrote is there. Reports "E2E PASS|FAIL name detail" on the console; the host reads whichever
# QEMU's console the guest ended on.

. /e2e.conf
pass() { echo "E2E PASS $1 ${2:-}"; }
fail() { echo "E2E FAIL $1 ${2:-}"; }

mkdir -p /mnt
if ! mount -t virtiofs "$TAG" /mnt; then
    fail mount "mount -t virtiofs $TAG failed"
    exit 1
fi
cd /mnt/work || { fail cwd "no /mnt/work"; exit 1; }
exec 3< held.txt            # held open for reading across the migration
exec 4>> log.txt            # held open for appending across the migration
dd if=/dev/urandom of=data.bin bs=64k count=32 2>/dev/null
sync data.bin
sha256sum data.bin > data.sha
sync data.sha
echo "E2E READY"

# Guest I/O while the host migrates: a numbered line a round, each fsynced.
n=0
while [ ! -e /mnt/migrated ]; do
    n=$((n + 1))
    echo "line $n" >&4
    sync log.txt
    [ "$n" -lt 3000 ] || { fail wait "no 'migrated' marker after $n rounds"; break; }
    sleep 0.05
done
echo "E2E INFO wrote $n lines before the marker"
n=$((n + 1))
echo "line $n" >&4
sync log.txt

# What the guest held must have come across.
if [ "$(pwd)" = /mnt/work ] && [ -e data.sha ]; then
    pass cwd "$(pwd)"
else
    fail cwd "working directory $(pwd) lost"
fi
if sha256sum -c data.sha >/dev/null 2>&1; then
    pass data "every byte of data.bin is there"
else
    fail data "data.bin does not match its checksum"
fi
held=$(cat <&3 2>/tmp/held.err)
case $EXPECT_HELD in
    content)
        if [ "$held" = "$HELD" ]; then
            pass held-fd "the old descriptor reads the file it was opened on"
        else
            fail held-fd "read '$held' $(cat /tmp/held.err)"
        fi ;;
    eio)
        if grep -qiE 'I/O error|Input/output error' /tmp/held.err; then
            pass held-fd "the file the destination could not find reads EIO"
        else
            fail held-fd "expected EIO, read '$held' $(cat /tmp/held.err)"
        fi ;;
esac
expected=$(seq 1 "$n" | sed 's/^/line /' | sha256sum | cut -d' ' -f1)
if [ "$(sha256sum < log.txt | cut -d' ' -f1)" = "$expected" ]; then
    pass appends "$n lines, none lost or repeated"
else
    fail appends "log.txt has $(wc -l < log.txt) lines, expected $n"
fi
echo "$n" > lines.txt
sync lines.txt
exec 3<&- 4>&-
cd /
umount /mnt && pass umount || fail umount "umount failed"
echo "E2E DONE"
