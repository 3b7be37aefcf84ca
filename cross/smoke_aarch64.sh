#!/usr/bin/env bash
# The device role on an emulated aarch64 board, set up the way a person sets up a Pi: an arm64
# Debian root file system run through qemu user-mode emulation (binfmt_misc) stands in for the
# flashed card. prepare_card.sh fills its boot folder (offline wheelhouse, edge address), the
# first-run script runs as at first boot, the setup unit's command (install.sh) runs by hand,
# then the join unit's command runs by hand as the service account, with its settings from
# /etc/hiertrain-edge/device.toml, against an edge and a cloud on this host. A chroot shares
# the host's network namespace, so loopback reaches them. No systemd runs in the chroot, so
# the units' commands are taken from the unit files and run by hand.
#
#   sudo cross/smoke_aarch64.sh [--steps 30] [--work DIR] [--cache DIR] [--wheelhouse DIR]
#
# Needs root and the Debian packages qemu-user-static, binfmt-support and debootstrap. The arm64
# root file system (about 10 min to debootstrap) and the wheelhouse are built on first use and
# cached. Exit status 0 when the board trained and its loss fell; the log is in WORK/smoke.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
steps=30
work="${TMPDIR:-/tmp}/hiertrain-smoke-aarch64"
cache="/var/tmp/hiertrain-edge-cross"
wheelhouse=""
suite="bookworm"
mirror="http://deb.debian.org/debian"
host_python="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "smoke_aarch64.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "smoke_aarch64.sh: needs root (chroot, mounts)" >&2; exit 2; }
for tool in debootstrap update-binfmts; do
  command -v "$tool" > /dev/null || {
    echo "smoke_aarch64.sh: $tool missing: apt-get install qemu-user-static binfmt-support debootstrap" >&2
    exit 2
  }
done

mkdir -p "$work" "$cache"
log="$work/smoke.log"
: > "$log"
say() {
  echo "[smoke $(date +%H:%M:%S)] $*" | tee -a "$log"
}
t_start=$(date +%s)

# 1. aarch64 binaries run through qemu: binfmt_misc mounted and the qemu-aarch64 entry on.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2> /dev/null || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
  echo "smoke_aarch64.sh: binfmt entry qemu-aarch64 is not enabled" >&2
  exit 2
}
say "binfmt: $(head -n2 /proc/sys/fs/binfmt_misc/qemu-aarch64 | tr '\n' ' ')"

# 2. The arm64 root file system, cached; every run works on a fresh copy.
base="$cache/rootfs-arm64-$suite"
if [ ! -x "$base/usr/bin/python3" ]; then
  say "debootstrap arm64 $suite into $base (first run only)"
  rm -rf "$base.partial"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$base.partial" "$mirror" >> "$log" 2>&1
  mv "$base.partial" "$base"
fi
py_version="$(chroot "$base" /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# 3. The offline wheelhouse for that Python.
wheelhouse="${wheelhouse:-$cache/wheelhouse-aarch64-cp${py_version/./}}"
if ! compgen -G "$wheelhouse/torch-*.whl" > /dev/null; then
  say "building the wheelhouse for CPython $py_version into $wheelhouse"
  "$here/build_wheelhouse.sh" --python "$py_version" --out "$wheelhouse" >> "$log" 2>&1
else
  # The project's own wheel always from this checkout.
  rm -f "$wheelhouse"/hiertrain_edge-*.whl
  "$host_python" -m pip wheel --no-deps --quiet --wheel-dir "$wheelhouse" "$repo" >> "$log" 2>&1
fi

root="$work/rootfs"
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -l "${mounts[$i]}" 2> /dev/null || true
  done
  if [ -n "${edge_pid:-}" ]; then kill "$edge_pid" 2> /dev/null || true; fi
  if [ -n "${cloud_pid:-}" ]; then kill "$cloud_pid" 2> /dev/null || true; fi
}
trap cleanup EXIT
rm -rf "$root"
cp -a "$base" "$root"
for m in proc sys dev; do
  mount --bind "/$m" "$root/$m"
  mounts+=("$root/$m")
done
# The card's boot partition, as Raspberry Pi OS mounts it.
boot="$root/boot/firmware"
mkdir -p "$boot"
echo "console=serial0,115200 console=tty1 root=PARTUUID=0000-02 rootfstype=ext4 rootwait" \
  > "$boot/cmdline.txt"

# A clean environment inside, as on a board (no pip settings of this host leak in).
in_board() {
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}
say "emulated board: uname -m = $(in_board uname -m), $(in_board python3 --version)"

# 4. Edge and cloud on this host, on free loopback ports.
read -r edge_port cloud_port < <("$host_python" -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
cat > "$work/job.toml" << EOF
model = "small_cnn"
batch_size = 32
steps = $steps
optimizer = "sgd"
lr = 0.05
seed = 0
EOF

# 5. The README's Pi path: prepare the card, first boot, the setup unit's install.
say "prepare_card.sh on the card's boot folder (offline wheelhouse, edge 127.0.0.1:$edge_port)"
PYTHON="$host_python" "$repo/firmware_scripts/prepare_card.sh" "$boot" \
  --edge "127.0.0.1:$edge_port" --wheelhouse "$wheelhouse" --threads 2 2>&1 | tee -a "$log"
say "cmdline.txt: $(cat "$boot/cmdline.txt")"
say "first boot: systemd.run= runs /boot/firmware/firstrun.sh"
in_board bash /boot/firmware/firstrun.sh 2>&1 | tee -a "$log"
say "after first boot: cmdline.txt: $(cat "$boot/cmdline.txt");" \
  "setup unit enabled: $(readlink "$root/etc/systemd/system/multi-user.target.wants/hiertrain-edge-setup.service")"
setup_exec="$(sed -n 's/^ExecStart=//p' "$root/etc/systemd/system/hiertrain-edge-setup.service")"
say "setup unit's command, run by hand: $setup_exec (INSTALL_ARGS from settings.env)"
t0=$(date +%s)
# shellcheck disable=SC2016  # expanded inside the board, as systemd would
in_board /bin/bash -c 'set -a; . /var/lib/hiertrain-edge-setup/settings.env; set +a;
  exec /bin/bash /var/lib/hiertrain-edge-setup/install.sh $INSTALL_ARGS' 2>&1 | tee -a "$log"
say "install took $(($(date +%s) - t0)) s"
say "settings written: $(tr '\n' ' ' < "$root/etc/hiertrain-edge/device.toml")"

# The host's tiers run the very code the board got (the wheel), not the working tree, which may
# change while the emulated install runs.
host_code="$work/host-code"
rm -rf "$host_code"
host_wheels=("$wheelhouse"/hiertrain_edge-*.whl)
"$host_python" -m zipfile -e "${host_wheels[0]}" "$host_code"
export PYTHONPATH="$host_code"
"$host_python" -m hiertrain_edge --log-level info cloud --listen "tcp://127.0.0.1:$cloud_port" \
  --once --out "$work/cloud" > "$work/cloud.log" 2>&1 &
cloud_pid=$!
"$host_python" -m hiertrain_edge --log-level info serve --listen "tcp://127.0.0.1:$edge_port" \
  --cloud "127.0.0.1:$cloud_port" --job "$work/job.toml" --once --out "$work/edge" \
  > "$work/edge.log" 2>&1 &
edge_pid=$!

exec_start="$(sed -n 's/^ExecStart=//p' "$root/etc/systemd/system/hiertrain-edge-join.service")"
user="$(sed -n 's/^User=//p' "$root/etc/systemd/system/hiertrain-edge-join.service")"
say "service command, run by hand as $user: $exec_start"
t0=$(date +%s)
set +e
# shellcheck disable=SC2086,SC2016  # ExecStart is a plain word list; $(...) expands inside
in_board setpriv --reuid="$user" --regid="$user" --init-groups /bin/sh -c \
  'echo "board: uname -m = $(uname -m), user $(id -un)"; exec "$@"' sh $exec_start \
  2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
set -e
say "join exited with $rc after $(($(date +%s) - t0)) s"
wait "$edge_pid" || true
wait "$cloud_pid" || true
edge_pid=""
cloud_pid=""
sed 's/^/[edge] /' "$work/edge.log" >> "$log"
sed 's/^/[cloud] /' "$work/cloud.log" >> "$log"
cp "$root/var/lib/hiertrain-edge/report.json" "$work/report.json" 2> /dev/null || true

# 6. Verdict: trained >= 20 steps and the loss fell.
"$host_python" - "$work/report.json" << 'EOF' | tee -a "$log"
import json, sys
r = json.load(open(sys.argv[1]))
losses = [it["loss"] for it in r["iterations"]]
print("loss per step:", " ".join(f"{x:.3f}" for x in losses))
head, tail = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
print(f"steps {len(losses)}; mean loss of the first 5 steps {head:.4f}, last 5 {tail:.4f}; "
      f"test accuracy {r['test_accuracy']}")
sys.exit(0 if len(losses) >= 20 and tail < head else 1)
EOF
verdict=${PIPESTATUS[0]}
say "total $(($(date +%s) - t_start)) s; verdict $([ "$rc" = 0 ] && [ "$verdict" = 0 ] && echo PASS || echo FAIL)"
[ "$rc" = 0 ] && [ "$verdict" = 0 ]
