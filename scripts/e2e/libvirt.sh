# The guest started by libvirt instead of by hand (sourced by e2e-virtiofs.sh
# with --libvirt): Debian's libvirt daemons, started here without systemd, run
# a transient TCG domain (q35, memfd shared memory, direct kernel boot of the
# e2e initramfs) whose <filesystem> names vhu-fsd as its virtiofsd <binary>.
# libvirt then starts vhu-fsd with its own command line, on a socket it binds.
#
# --libvirt takes space-separated settings of the domain's <binary>:
#   xattr=on|off  cache=none|always  sandbox=chroot|namespace  threads=N
#   lock=on       (posix and flock locks)
# Only the daemons this file started are stopped.

LIBVIRT_STARTED=()
LIBVIRT_DOMAIN=

libvirt_packages() {
    command -v virsh >/dev/null && [ -x /usr/sbin/libvirtd ] && return 0
    [ "$INSTALL" = 1 ] || die "libvirt is not installed"
    apt_update_once
    local suite=()
    enable_backports && suite=(-t bookworm-backports)
    apt_install "${suite[@]}" libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
}

libvirt_start() {
    local daemon
    for daemon in virtlogd libvirtd; do
        if ! pgrep -x "$daemon" >/dev/null; then
            log "starting /usr/sbin/$daemon -d"
            "/usr/sbin/$daemon" -d
            LIBVIRT_STARTED+=("$daemon")
        fi
    done
    for _ in $(seq 100); do
        virsh -q -c qemu:///system version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "libvirtd did not answer on qemu:///system"
}

libvirt_stop() {
    if [ -n "$LIBVIRT_DOMAIN" ]; then
        virsh -q -c qemu:///system destroy "$LIBVIRT_DOMAIN" >/dev/null 2>&1 || true
        LIBVIRT_DOMAIN=
    fi
    local daemon pid
    for daemon in "${LIBVIRT_STARTED[@]}"; do
        pid=$(pgrep -x "$daemon" || true)
        [ -n "$pid" ] || continue
        kill $pid 2>/dev/null || true
        # Gone before the next run looks for a running daemon (a loaded machine takes a while).
        for _ in $(seq 300); do
            pgrep -x "$daemon" >/dev/null || break
            sleep 0.1
        done
    done
    LIBVIRT_STARTED=()
}

# The <binary> element for the settings in $LIBVIRT.
libvirt_binary() {
    local kv xattr=on inner=""
    for kv in $LIBVIRT; do
        case $kv in
            xattr=*) xattr=${kv#*=} ;;
            cache=*) inner+="<cache mode='${kv#*=}'/>" ;;
            sandbox=*) inner+="<sandbox mode='${kv#*=}'/>" ;;
            lock=on) inner+="<lock posix='on' flock='on'/>" ;;
            threads=*) inner+="<thread_pool size='${kv#*=}'/>" ;;
            comma=on) ;;
            *) die "--libvirt: unknown setting $kv" ;;
        esac
    done
    echo "<binary path='$VHU_FSD_BIN' xattr='$xattr'>$inner</binary>"
}

libvirt_domain_xml() {
    local queues=""
    cat <<XML
<domain type='qemu'>
  <name>$LIBVIRT_DOMAIN</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$BOOT_KERNEL</kernel>
    <initrd>$WORK/initrd.cpio</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 rdinit=/init</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      $(libvirt_binary)
      <source dir='$SHARE'/>
      <target dir='$TAG'/>
    </filesystem>
    <serial type='file'><source path='$WORK/console.log'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
XML
}

# Boots the guest through libvirt and waits until it powers off; sets what the
# direct path sets: T1, T2, qemu_rc, backend_rc, and the logs in $WORK.
libvirt_run_guest() {
    LIBVIRT_DOMAIN=vhu-e2e-$$
    # QEMU runs as libvirt's unprivileged user: it reads the kernel and the
    # initramfs and writes the console.
    chmod 0755 "$WORK"
    : > "$WORK/console.log"
    chmod 0666 "$WORK/console.log"
    libvirt_domain_xml > "$WORK/domain.xml"
    log "libvirt: $(libvirt_binary)"
    T1=$(date +%s.%N)
    qemu_rc=0
    if ! virsh -q -c qemu:///system create "$WORK/domain.xml" > "$WORK/qemu.out" 2>&1; then
        qemu_rc=1
        LIBVIRT_DOMAIN=
    fi
    local waited=0
    while [ -n "$LIBVIRT_DOMAIN" ] &&
        virsh -q -c qemu:///system domstate "$LIBVIRT_DOMAIN" >/dev/null 2>&1; do
        if [ "$waited" -ge $((TIMEOUT * 10)) ]; then
            qemu_rc=124
            virsh -q -c qemu:///system destroy "$LIBVIRT_DOMAIN" >/dev/null 2>&1 || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    T2=$(date +%s.%N)
    local logs=/var/log/libvirt/qemu
    cat "$logs/$LIBVIRT_DOMAIN-fs0-virtiofsd.log" > "$WORK/backend.log" 2>/dev/null || true
    cat "$logs/$LIBVIRT_DOMAIN.log" >> "$WORK/qemu.out" 2>/dev/null || true
    LIBVIRT_DOMAIN=
    # libvirt stops the back-end with the domain; a crash shows in its log.
    backend_rc=0
    grep -q 'panicked' "$WORK/backend.log" && backend_rc=134
    return 0
}
