#!/usr/bin/env bash
# Prepare a freshly flashed Raspberry Pi OS (64-bit, Bookworm) card so that the board installs
# hiertrain-edge and starts `join` on its own at first boot. Run on the machine that flashed
# the card, with the card's boot partition mounted (it holds cmdline.txt and config.txt).
#
#   firmware_scripts/prepare_card.sh BOOT_DIR --edge HOST[:PORT] [--secret-key FILE]
#       [--edge-key FILE] [--wheelhouse DIR] [--threads N] [--data PATH] [--board TYPE]
#       [--wheel FILE]   (hiertrain-edge's wheel; default: built from this checkout)
#
# It copies the installer, this checkout's wheel, the keys and (optionally) an offline
# wheelhouse to BOOT_DIR/hiertrain-edge/ and hooks firstboot.sh into the Pi's first-run
# mechanism: into the firstrun.sh that Raspberry Pi Imager writes when you set a user, Wi-Fi
# or SSH in its settings, or, without one, into a firstrun.sh of our own that cmdline.txt
# runs once (systemd.run=).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
setup="/var/lib/hiertrain-edge-setup"

die() {
  echo "prepare_card.sh: $*" >&2
  exit 2
}

[ $# -ge 1 ] || die "usage: prepare_card.sh BOOT_DIR --edge HOST[:PORT] [options] (see the top of this file)"
boot="$1"
shift
edge=""
secret_key=""
edge_key=""
wheelhouse=""
wheel=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --edge) edge="${2:?}"; shift 2 ;;
    --secret-key) secret_key="${2:?}"; shift 2 ;;
    --edge-key) edge_key="${2:?}"; shift 2 ;;
    --wheelhouse) wheelhouse="${2:?}"; shift 2 ;;
    --wheel) wheel="${2:?}"; shift 2 ;;
    --threads | --data | --board) extra+=("$1" "${2:?}"); shift 2 ;;
    *) die "unknown option '$1'" ;;
  esac
done
[ -f "$boot/cmdline.txt" ] || die "$boot has no cmdline.txt: give the mounted boot partition of the card"
[ -n "$edge" ] || die "give --edge HOST[:PORT]"

# 1. Installer, wheel, keys and settings into BOOT_DIR/hiertrain-edge/.
dest="$boot/hiertrain-edge"
mkdir -p "$dest"
cp "$here/install.sh" "$here/selftest.sh" "$here/firstboot.sh" "$here/README.md" \
  "$here/hiertrain-edge-join.service" "$dest/"
rm -f "$dest"/hiertrain_edge-*.whl
if [ -n "$wheel" ]; then
  cp "$wheel" "$dest/"
elif [ -n "$wheelhouse" ]; then
  cp "$wheelhouse"/hiertrain_edge-*.whl "$dest/"
else
  "${PYTHON:-python3}" -m pip wheel --no-deps --quiet --wheel-dir "$dest" "$repo"
fi
if [ -n "$wheelhouse" ]; then
  rm -rf "$dest/wheelhouse"
  cp -r "$wheelhouse" "$dest/wheelhouse"
fi
wheels=("$dest"/hiertrain_edge-*.whl)
args=(--board auto --edge "$edge" --source "$setup/$(basename "${wheels[0]}")")
if [ -n "$wheelhouse" ]; then
  args+=(--wheelhouse "$setup/wheelhouse")
fi
if [ -n "$secret_key" ]; then
  cp "$secret_key" "$dest/device.key_secret"
  args+=(--secret-key "$setup/device.key_secret")
fi
if [ -n "$edge_key" ]; then
  cp "$edge_key" "$dest/edge.key"
  args+=(--edge-key "$setup/edge.key")
fi
args+=("${extra[@]}")
printf 'INSTALL_ARGS="%s"\n' "${args[*]}" > "$dest/settings.env"

# 2. Run firstboot.sh once at first boot.
hook="bash /boot/firmware/hiertrain-edge/firstboot.sh || true"
if [ -f "$boot/firstrun.sh" ]; then
  if ! grep -qF "$hook" "$boot/firstrun.sh"; then
    # Imager's script ends by deleting itself; run ours just before that.
    if grep -q '^rm -f .*firstrun.sh' "$boot/firstrun.sh"; then
      sed -i "0,/^rm -f .*firstrun.sh/s##$hook\n&#" "$boot/firstrun.sh"
    else
      die "$boot/firstrun.sh does not look like Raspberry Pi Imager's (no 'rm -f ... firstrun.sh'); add '$hook' to it by hand"
    fi
  fi
  echo "hooked into Raspberry Pi Imager's $boot/firstrun.sh"
else
  cat > "$boot/firstrun.sh" << EOF2
#!/bin/bash
# hiertrain-edge first boot (written by prepare_card.sh); runs once, then removes itself.
set +e
$hook
rm -f /boot/firmware/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/firmware/cmdline.txt
exit 0
EOF2
  if ! grep -q 'systemd.run=' "$boot/cmdline.txt"; then
    # cmdline.txt is a single line; the first-run arguments go at its end.
    sed -i '1s|$| systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target|' \
      "$boot/cmdline.txt"
  fi
  echo "wrote $boot/firstrun.sh and added systemd.run= to cmdline.txt"
fi
echo "card ready: at first boot the board installs hiertrain-edge and joins $edge"
