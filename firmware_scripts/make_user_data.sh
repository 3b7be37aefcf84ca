#!/usr/bin/env bash
# cloud-init user-data for an Ubuntu-based board image (Jetson with JetPack 6, Ubuntu Server
# for Raspberry Pi): at first boot cloud-init writes the installer, this checkout's wheel and
# the keys to /var/lib/hiertrain-edge-setup and runs install.sh, which installs torch for the
# board, hiertrain-edge, the settings (edge address, keys) and the `join` service.
#
#   firmware_scripts/make_user_data.sh --edge HOST[:PORT] [--secret-key FILE]
#       [--edge-key FILE] [--board TYPE] [--threads N] [--data PATH]
#       [--wheelhouse DIR_ON_BOARD] [--wheel FILE] > user-data
#
# Merge the output with your own user-data (users, SSH keys, Wi-Fi) or use it as it is.
# --wheelhouse names a folder that will exist on the board (e.g. a USB stick) for an
# offline install; without it torch comes from the board's index over the network.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
setup="/var/lib/hiertrain-edge-setup"

die() {
  echo "make_user_data.sh: $*" >&2
  exit 2
}

edge=""
secret_key=""
edge_key=""
wheel=""
args=(--board auto)
while [ $# -gt 0 ]; do
  case "$1" in
    --edge) edge="${2:?}"; shift 2 ;;
    --secret-key) secret_key="${2:?}"; shift 2 ;;
    --edge-key) edge_key="${2:?}"; shift 2 ;;
    --board) args[1]="${2:?}"; shift 2 ;;
    --wheel) wheel="${2:?}"; shift 2 ;;
    --threads | --data | --wheelhouse) args+=("$1" "${2:?}"); shift 2 ;;
    *) die "unknown option '$1'" ;;
  esac
done
[ -n "$edge" ] || die "give --edge HOST[:PORT]"
args+=(--edge "$edge")

if [ -z "$wheel" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "${PYTHON:-python3}" -m pip wheel --no-deps --quiet --wheel-dir "$tmp" "$repo" >&2
  wheels=("$tmp"/hiertrain_edge-*.whl)
  wheel="${wheels[0]}"
fi
args+=(--source "$setup/$(basename "$wheel")")

# file PATH_ON_BOARD MODE LOCAL_FILE: one write_files entry, base64 so any bytes survive.
file() {
  printf '  - path: %s\n    permissions: "%s"\n    encoding: b64\n    content: %s\n' \
    "$1" "$2" "$(base64 -w0 < "$3")"
}

echo "#cloud-config"
echo "# hiertrain-edge board: install and start 'hiertrain-edge join' at first boot"
echo "# (written by firmware_scripts/make_user_data.sh). Edge: $edge"
echo "write_files:"
file "$setup/install.sh" 0755 "$here/install.sh"
file "$setup/selftest.sh" 0755 "$here/selftest.sh"
file "$setup/README.md" 0644 "$here/README.md"
file "$setup/hiertrain-edge-join.service" 0644 "$here/hiertrain-edge-join.service"
file "$setup/$(basename "$wheel")" 0644 "$wheel"
if [ -n "$secret_key" ]; then
  file "$setup/device.key_secret" 0600 "$secret_key"
  args+=(--secret-key "$setup/device.key_secret")
fi
if [ -n "$edge_key" ]; then
  file "$setup/edge.key" 0644 "$edge_key"
  args+=(--edge-key "$setup/edge.key")
fi
echo "runcmd:"
# One list item per argument: cloud-init runs it without a shell, so nothing is re-split.
printf '  - ["bash", "%s/install.sh"' "$setup"
for a in "${args[@]}"; do
  printf ', "%s"' "${a//\"/\\\"}"
done
printf ']\n'
