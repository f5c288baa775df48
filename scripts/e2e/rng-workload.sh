# The guest side of the entropy device's end-to-end test (run by /init): reads
# /dev/hwrng, which the virtio-rng driver feeds from the vhost-user back-end, and
# reports each check as "E2E PASS|FAIL name detail" on the console.

pass() { echo "E2E PASS $1 ${2:-}"; }
fail() { echo "E2E FAIL $1 ${2:-}"; }

current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
case $current in
    virtio_rng*) pass rng-current "$current" ;;
    *) fail rng-current "hw_random uses '${current:-nothing}', not virtio_rng" ;;
esac

# Two reads of 64 KiB: both complete, are full length, look random and differ.
ok=1
for i in 1 2; do
    if ! dd if=/dev/hwrng of=/tmp/rng$i bs=4096 count=16 2>/tmp/dd$i; then
        fail rng-read "read $i failed: $(cat /tmp/dd$i)"
        ok=0
    fi
done
if [ "$ok" = 1 ]; then
    size1=$(wc -c < /tmp/rng1)
    size2=$(wc -c < /tmp/rng2)
    if [ "$size1" = 65536 ] && [ "$size2" = 65536 ]; then
        pass rng-read "2 x $size1 bytes"
    else
        fail rng-read "read $size1 and $size2 bytes, expected 65536"
    fi
    # Random bytes take (almost) all 256 values in 64 KiB; zeroes or a pattern do not.
    distinct=$(od -An -v -tx1 /tmp/rng1 | tr -s ' ' '\n' | sort -u | grep -c .)
    if [ "$distinct" -ge 250 ]; then
        pass rng-random "$distinct distinct byte values"
    else
        fail rng-random "only $distinct distinct byte values"
    fi
    if cmp -s /tmp/rng1 /tmp/rng2; then
        fail rng-differ "two reads returned the same bytes"
    else
        pass rng-differ
    fi
fi
echo "E2E DONE"
