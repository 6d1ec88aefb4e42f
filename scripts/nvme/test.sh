#!/usr/bin/env bash
# make nvme-test: runs drivers/nvme's guest tests on QEMU's emulated NVMe controller
# behind an emulated Intel IOMMU (q35, TCG), with Debian's cloud kernel and a
# busybox initramfs that carries the static test binary and the VFIO modules.
# The guest prints POLYTROPON-NVME-RESULT: PASS|FAIL; a boot that prints neither (a
# panic or hang of the emulated machine, about 1 boot in 10-20 under TCG) is retried
# once. Exits non-zero unless the guest ran the tests and they passed.
#
# Env: NVME_TEST_BOOT_TIMEOUT (s, default 420), NVME_TEST_RUN (go test -run pattern),
#      NVME_TEST_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bash scripts/install-deps.sh scripts/nvme/apt-packages.txt

# The newest installed cloud kernel whose modules are present.
kver=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -1 || true)
kernel=/boot/vmlinuz-$kver
if [[ -z "$kver" || ! -r "$kernel" ]]; then
	echo "nvme-test: no linux-image-cloud-amd64 kernel in /boot and /lib/modules" >&2
	exit 1
fi
mods=/lib/modules/$kver
busybox=$(command -v busybox || echo /bin/busybox)
[[ -x "$busybox" ]] || { echo "nvme-test: busybox (busybox-static) not found" >&2; exit 1; }

work=$(mktemp -d /var/tmp/polytropon-nvme-test.XXXXXX)
[[ "${NVME_TEST_KEEP:-0}" = 1 ]] || trap 'rm -rf "$work"' EXIT
echo "nvme-test: kernel $kver, work dir $work"

GO=${GO:-go}
# invariants: the queue accounting checks run on every Poll in the guest.
CGO_ENABLED=0 $GO test -c -tags invariants -o "$work/nvme.test" ./drivers/nvme
CGO_ENABLED=0 $GO build -ldflags "-s -w" -o "$work/polytropon" ./cmd/polytropon

# initramfs: busybox, init, the test binary, and vfio-pci with its dependencies.
ir=$work/root
mkdir -p "$ir"/{bin,proc,sys,dev,tmp} "$ir/lib/modules/$kver"
cp "$busybox" "$ir/bin/busybox"
cp scripts/nvme/init "$ir/init"
chmod 755 "$ir/init"
cp "$work/nvme.test" "$ir/nvme.test"
cp "$work/polytropon" "$ir/polytropon"
echo "${NVME_TEST_RUN:-^(TestGuestPassthrough|TestGuestVFIO)$}" > "$ir/tests.run"
: > "$ir/modules.list"
for m in vfio_iommu_type1 vfio-pci; do
	echo "$m" >> "$ir/modules.list"
	pat=$(echo "$m" | sed 's/[-_]/[-_]/g')
	line=$(grep -E "/$pat\.ko(\.[a-z]+)?:" "$mods/modules.dep" || true)
	if [[ -z "$line" ]]; then
		if grep -qE "/$pat\.ko" "$mods/modules.builtin" 2>/dev/null; then continue; fi
		echo "nvme-test: module $m not found for $kver" >&2
		exit 1
	fi
	for f in $(echo "$line" | tr -d :); do
		mkdir -p "$ir/lib/modules/$kver/$(dirname "$f")"
		cp "$mods/$f" "$ir/lib/modules/$kver/$f"
	done
done
cp "$mods"/modules.builtin* "$ir/lib/modules/$kver/" 2>/dev/null || true
cp "$mods/modules.order" "$ir/lib/modules/$kver/" 2>/dev/null || true
"$busybox" depmod -b "$ir" "$kver"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# A sparse 256 MiB namespace of 512-byte blocks.
truncate -s 256M "$work/nvme.img"

boot() {
	local log=$1
	timeout --foreground -k 10 "${NVME_TEST_BOOT_TIMEOUT:-420}" \
		qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 1G \
		-nographic -no-reboot -nic none \
		-device intel-iommu,intremap=on \
		-kernel "$kernel" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 panic=-1 no_timer_check intel_iommu=on iommu=pt hugepages=16 quiet loglevel=4" \
		-drive file="$work/nvme.img",if=none,id=nv0,format=raw \
		-device nvme,serial=polytropon0,drive=nv0 </dev/null 2>&1 | tee "$log"
}

for attempt in 1 2; do
	log=$work/console-$attempt.log
	echo "nvme-test: boot $attempt"
	boot "$log" || true
	res=$(grep -a -o 'POLYTROPON-NVME-RESULT: .*' "$log" | tail -1 | tr -d '\r' || true)
	if [[ -n "$res" ]]; then
		break
	fi
	echo "nvme-test: boot $attempt gave no result (guest panic, hang or time limit)" >&2
done
mkdir -p "$root/bin" && cp "$log" "$root/bin/nvme-test-console.log"
if [[ "$res" != "POLYTROPON-NVME-RESULT: PASS" ]]; then
	echo "nvme-test: ${res:-no result from the guest}" >&2
	exit 1
fi
# The guest tests must have run, not skipped.
for t in TestGuestPassthrough TestGuestVFIO; do
	if [[ -n "${NVME_TEST_RUN:-}" ]]; then break; fi
	if ! grep -aq -- "--- PASS: $t " "$log"; then
		echo "nvme-test: $t did not pass in the guest (skipped or missing)" >&2
		exit 1
	fi
done
echo "nvme-test: PASS"
