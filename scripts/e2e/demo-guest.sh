# The guest side of scripts/demo.sh (run by /init): mounts the share vhu-fsd serves on /mnt,
# then runs the host's command there (/cmd.sh) or, without one, opens a shell on the mount.
# Power-off follows either way (/init).

. /demo.conf
mkdir -p /mnt
if ! mount -t virtiofs "$TAG" /mnt; then
    echo "demo: mount -t virtiofs $TAG /mnt failed"
    exit 1
fi
echo "demo: the guest mounted the share on /mnt ($(grep " /mnt " /proc/mounts))"
cd /mnt
if [ -s /cmd.sh ]; then
    echo "demo: running in the guest, in /mnt: $(cat /cmd.sh)"
    sh /cmd.sh
    status=$?
    echo "demo: the command exited with status $status"
    cd /
    umount /mnt
    echo "DEMO STATUS $status"
else
    echo "demo: a shell on the mount; 'exit' (or Ctrl-D) powers the guest off"
    setsid cttyhack sh -l
    cd /
    umount /mnt
fi
