# The guest side of scripts/guest-fio-compare.sh (run by /init): mounts the share and runs the
# one fio job /fio.conf names on its data file, with O_DIRECT so every read reaches the
# back-end (no guest page cache), and prints fio's terse line for the host to read.

. /fio.conf
mkdir -p /mnt
if ! mount -t virtiofs "$TAG" /mnt; then
    echo "FIO ERROR mount failed"
    exit 1
fi
cd /mnt
out=$(fio --name=job --filename=data --direct=1 --ioengine=psync --rw="$RW" --bs="$BS" \
    --numjobs="$JOBS" --group_reporting --time_based --runtime="$RUNTIME" --size="$SIZE" \
    --offset_increment="$OFFSET" --output-format=terse --terse-version=3 2>&1)
echo "FIO TERSE $(echo "$out" | grep '^3;' | tail -n 1)"
[ -n "$(echo "$out" | grep '^3;')" ] || echo "FIO ERROR $out"
cd /
umount /mnt
