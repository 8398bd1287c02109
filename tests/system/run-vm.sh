#!/usr/bin/env bash
# Boots the test VM once on a throw-away overlay and runs one job.
#
#   tests/system/run-vm.sh IMAGE_DIR JOB_DIR [SECONDS]
#
# IMAGE_DIR is what build-image.sh printed. JOB_DIR is shared with the VM
# (9p, tag `job`); the image's cipug-test-job.service runs JOB_DIR/run.sh at
# boot and writes JOB_DIR/out/{run.log,rc,journal.txt}, then powers off.
# SECONDS (default 1500) bounds the whole boot; qemu is killed after it.
# The serial console goes to JOB_DIR/console.log. The VM has no network
# (only loopback inside). Software emulation (TCG) unless CIPUG_VM_KVM=1 and
# /dev/kvm is usable with vmx/svm in /proc/cpuinfo.
set -euo pipefail

image=${1:?image folder}
job=${2:?job folder}
limit=${3:-1500}
job=$(realpath "$job")
mkdir -p "$job/out"

overlay=$(mktemp --suffix=.qcow2 "${TMPDIR:-/tmp}/cipug-vm-overlay-XXXXXX")
qemu_pid=
cleanup() {
    [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null || true
    rm -f "$overlay"
}
trap cleanup EXIT
qemu-img create -q -f qcow2 -F qcow2 -b "$(realpath "$image/root.qcow2")" "$overlay"

accel=(-accel tcg,thread=multi,tb-size=512 -cpu max)
if [[ ${CIPUG_VM_KVM-} == 1 && -w /dev/kvm ]] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
    accel=(-accel kvm -cpu host)
fi
smp=$(nproc)
((smp > 4)) && smp=4

qemu-system-x86_64 "${accel[@]}" -m "${CIPUG_VM_MEMORY:-2048}" -smp "$smp" \
    -nographic -no-reboot \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw mitigations=off quiet systemd.show_status=0" \
    -drive "file=$overlay,format=qcow2,if=virtio,cache=unsafe" \
    -virtfs "local,path=$job,mount_tag=job,security_model=none" \
    -nic none </dev/null >"$job/console.log" 2>&1 &
qemu_pid=$!
start=$SECONDS
while kill -0 "$qemu_pid" 2>/dev/null; do
    if ((SECONDS - start > limit)); then
        echo "run-vm.sh: VM still running after $limit s; killed" >&2
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
        qemu_pid=
        exit 124
    fi
    sleep 1
done
status=0
wait "$qemu_pid" || status=$?
qemu_pid=
echo "$((SECONDS - start))" >"$job/out/vm-seconds"
exit "$status"
