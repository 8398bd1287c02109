#!/usr/bin/env bash
# Builds the Debian 12 VM image of the system test tier, or finds it cached.
#
#   tests/system/build-image.sh            build if needed; print the image folder
#   tests/system/build-image.sh --hash     print the cache key only
#
# Everything comes from Debian packages (debootstrap minbase). The image is
# cached in $CIPUG_VM_CACHE/<key>/ (default /var/cache/cipug-tests/vm), where
# <key> is a hash of this script, which holds the package list and every file
# put into the image: change either and a new image is built. The folder holds
# vmlinuz, initrd.img, root.qcow2, dpkg.txt (`dpkg-query -W` inside, since the
# mirror is live), build.log and `complete` (the build's seconds).
#
# The image boots to a oneshot unit, cipug-test-job.service, that mounts the
# 9p share tagged `job` at /job, runs /job/run.sh under `timeout`, writes its
# output, exit code and `journalctl -b` into /job/out/, then powers off
# (run-vm.sh boots it). Needs root, debootstrap, e2fsprogs and qemu-img. Older images
# are removed after a build, except the most recent one.
set -euo pipefail

PACKAGES=(
    systemd-sysv udev dbus kmod linux-image-amd64 initramfs-tools iproute2 procps
    python3 curl ca-certificates
    podman podman-compose runc conmon crun netavark aardvark-dns iptables
    skopeo snapper btrfs-progs docker-registry busybox-static
)
SUITE=bookworm
MIRROR=${CIPUG_VM_MIRROR:-http://deb.debian.org/debian}
CACHE_ROOT=${CIPUG_VM_CACHE:-/var/cache/cipug-tests/vm}

key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
if [[ ${1-} == --hash ]]; then
    echo "$key"
    exit 0
fi
out=$CACHE_ROOT/$key
if [[ -f $out/complete ]]; then
    echo "$out"
    exit 0
fi

[[ $(id -u) == 0 ]] || { echo "build-image.sh: needs root (debootstrap, chroot)" >&2; exit 2; }
for tool in debootstrap mkfs.ext4 qemu-img flock; do
    command -v "$tool" >/dev/null || { echo "build-image.sh: missing $tool" >&2; exit 2; }
done

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock-$key"
flock 9                                   # another build of the same image: wait for it
if [[ -f $out/complete ]]; then
    echo "$out"
    exit 0
fi

work=$(mktemp -d "$CACHE_ROOT/.build-$key-XXXXXX")
root=$work/root
cleanup() {
    local m
    # Whatever debootstrap's second stage left mounted in the chroot, deepest first.
    for m in $(findmnt -rno TARGET | grep -F "$root/" | sort -r); do umount -l "$m" || true; done
    rm -rf "$work"
}
trap cleanup EXIT

start=$SECONDS
log=$work/build.log
echo "build-image.sh: building $out (log: $log)" >&2
{
    include=$(IFS=,; echo "${PACKAGES[*]}")
    debootstrap --foreign --variant=minbase --include="$include" "$SUITE" "$root" "$MIRROR"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"   # no daemons start in the chroot
    chmod 755 "$root/usr/sbin/policy-rc.d"
    chroot "$root" /debootstrap/debootstrap --second-stage

    echo cipug-vm >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 cipug-vm\n' >"$root/etc/hosts"
    echo '/dev/vda / ext4 rw 0 1' >"$root/etc/fstab"
    : >"$root/etc/machine-id"

    # A small initrd: only what finds the virtio root disk.
    printf 'virtio_pci\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
    echo MODULES=list >"$root/etc/initramfs-tools/conf.d/cipug-vm"
    chroot "$root" update-initramfs -u -k all

    # A quiet boot: no periodic jobs, no daemons the tests start themselves.
    for unit in apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
        e2scrub_all.timer e2scrub_all.service e2scrub_reap.service fstrim.timer fstrim.service \
        man-db.timer man-db.service snapper-boot.timer snapper-boot.service snapper-cleanup.timer \
        snapper-cleanup.service snapper-timeline.timer snapper-timeline.service docker-registry.service \
        podman-auto-update.timer podman-restart.service podman-clean-transient.service; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done

    cat >"$root/usr/local/sbin/cipug-test-job" <<'JOB'
#!/bin/sh
# Runs the test job of the 9p share `job`, writes results back, powers off.
modprobe -a 9pnet_virtio 9p
mkdir -p /job
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /job; then
    mkdir -p /job/out
    limit=$(cat /job/timeout 2>/dev/null || echo 1500)
    date +%s.%N >/job/out/started
    timeout --kill-after=10 "$limit" /bin/sh /job/run.sh >/job/out/run.log 2>&1
    echo $? >/job/out/rc
    journalctl -b --no-pager -o short-precise >/job/out/journal.txt 2>&1
    sync
fi
systemctl --no-block poweroff
JOB
    chmod 755 "$root/usr/local/sbin/cipug-test-job"
    cat >"$root/etc/systemd/system/cipug-test-job.service" <<'UNIT'
[Unit]
Description=cipug system test job from the 9p share
After=basic.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cipug-test-job
TimeoutStartSec=infinity
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
    ln -sf /etc/systemd/system/cipug-test-job.service "$root/etc/systemd/system/multi-user.target.wants/cipug-test-job.service"

    rm -f "$root/usr/sbin/policy-rc.d"
    chroot "$root" dpkg-query -W >"$work/dpkg.txt"
    cp "$work/dpkg.txt" "$root/etc/cipug-vm-dpkg.txt"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/debootstrap"

    mkdir -p "$work/image"
    cp "$root"/boot/vmlinuz-* "$work/image/vmlinuz"
    cp "$root"/boot/initrd.img-* "$work/image/initrd.img"
    mkfs.ext4 -q -F -L cipug-vm -d "$root" "$work/root.img" 6G
    qemu-img convert -O qcow2 "$work/root.img" "$work/image/root.qcow2"
    rm -f "$work/root.img"
    mv "$work/dpkg.txt" "$work/image/"
} >"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "build-image.sh: build failed" >&2; exit 1; }

cp "$log" "$work/image/build.log"
echo $((SECONDS - start)) >"$work/image/complete"
rm -rf "$out"
mv "$work/image" "$out"
# Older images (another version of this script): keep the newest one besides this, for a
# machine that tests two branches; remove the rest.
for old in $(ls -1dt "$CACHE_ROOT"/*/complete 2>/dev/null | tail -n +3); do
    old=$(dirname "$old")
    echo "build-image.sh: removing the older image $old" >&2
    rm -rf "$old" "$CACHE_ROOT/.lock-$(basename "$old")"
done
echo "build-image.sh: built in $((SECONDS - start)) s" >&2
echo "$out"
