# The guest side of scripts/guest-fio-compare.sh (run by /init): mounts the share and runs the
# one fio job /fio.conf names: reads of its data file, with O_DIRECT so every read reaches the
# back-end (no guest page cache), or stats of the files under stat/ (ENGINE=filestat); prints
# fio's terse line for the host to read.

. /fio.conf
mkdir -p /mnt
if ! mount -t virtiofs "$TAG" /mnt; then
    echo "FIO ERROR mount failed"
    exit 1
fi
cd /mnt
if [ "$ENGINE" = filestat ]; then
    # stat(2) of the 1 000 files under stat/, each job all of them.
    out=$(fio --name=job --directory=stat --ioengine=filestat --nrfiles=1000 --filesize=4k \
        --filename_format='f.$filenum' --rw=read --bs=4k --numjobs="$JOBS" --group_reporting \
        --time_based --runtime="$RUNTIME" --output-format=terse --terse-version=3 2>&1)
else
    out=$(fio --name=job --filename=data --direct=1 --ioengine=psync --rw="$RW" --bs="$BS" \
        --numjobs="$JOBS" --group_reporting --time_based --runtime="$RUNTIME" --size="$SIZE" \
        --offset_increment="$OFFSET" --output-format=terse --terse-version=3 2>&1)
fi
echo "FIO TERSE $(echo "$out" | grep '^3;' | tail -n 1)"
[ -n "$(echo "$out" | grep '^3;')" ] || echo "FIO ERROR $out"
cd /
umount /mnt
