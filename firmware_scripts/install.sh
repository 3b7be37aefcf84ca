#!/usr/bin/env bash
# Install hiertrain-edge's device tier on a board and run it as a systemd service.
#
#   sudo firmware_scripts/install.sh --edge HOST[:PORT] [options]
#
# Boards: Raspberry Pi OS 64-bit (Bookworm) on a Pi 4/5, NVIDIA Jetson with JetPack 6, or any
# other 64-bit Debian/Ubuntu machine ("generic"). The board is detected; --board forces it.
#
# Options:
#   --edge HOST[:PORT]    the edge to join (written to the settings file)
#   --board TYPE          auto (default), pi, jetson or generic
#   --dry-run             print what would be done for this board type, change nothing
#   --wheelhouse DIR      install offline from a folder built by cross/build_wheelhouse.sh
#   --source SRC          hiertrain-edge to install: a wheel, a source folder or a pip
#                         requirement (default: the wheelhouse, else this script's checkout)
#   --torch SPEC          torch requirement (default: "torch" from the board's index)
#   --torch-index URL     index for torch (default: per board, see firmware_scripts/README.md)
#   --data PATH           training data on the board (default: the bundled MNIST test set)
#   --threads N           torch threads (default: torch's choice)
#   --secret-key FILE     the board's secret key file, copied to /etc/hiertrain-edge/keys
#   --edge-key FILE       the edge's public key file, copied to /etc/hiertrain-edge/keys
#   --prefix DIR          install folder (default /opt/hiertrain-edge)
#   --user NAME           unprivileged account the service runs as (default hiertrain)
#   --no-start            install and enable the service but do not start it now
#   --force-config        overwrite an existing /etc/hiertrain-edge/device.toml
#
# Exit status: 0 done; 2 bad usage or unsupported board; 3 installed, but the self-test
# failed or crashed, so the service was not enabled; 1 a step failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

board="auto"
dry_run=0
edge=""
wheelhouse=""
source_spec=""
torch_spec=""
torch_index=""
data=""
threads=""
secret_key=""
edge_key=""
prefix="/opt/hiertrain-edge"
user="hiertrain"
start=1
force_config=0
etc_dir="/etc/hiertrain-edge"
unit_name="hiertrain-edge-join.service"
unit_dir="/etc/systemd/system"
state_dir="/var/lib/hiertrain-edge"

# Where each board's torch comes from (documented in firmware_scripts/README.md):
# - Raspberry Pi OS and generic: PyTorch's own CPU builds for aarch64 and x86_64.
# - JetPack 6 (L4T R36, CUDA 12.6, Python 3.10): NVIDIA's Jetson AI Lab index of CUDA builds.
PI_TORCH_INDEX="https://download.pytorch.org/whl/cpu"
JETSON_TORCH_INDEX="https://pypi.jetson-ai-lab.io/jp6/cu126"
GENERIC_TORCH_INDEX="https://download.pytorch.org/whl/cpu"

die() {
  echo "install.sh: $*" >&2
  exit 2
}

usage() {
  sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --edge) edge="${2:?--edge needs HOST[:PORT]}"; shift 2 ;;
    --board) board="${2:?--board needs a type}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --wheelhouse) wheelhouse="${2:?--wheelhouse needs a folder}"; shift 2 ;;
    --source) source_spec="${2:?--source needs a value}"; shift 2 ;;
    --torch) torch_spec="${2:?--torch needs a requirement}"; shift 2 ;;
    --torch-index) torch_index="${2:?--torch-index needs a URL}"; shift 2 ;;
    --data) data="${2:?--data needs a path}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a number}"; shift 2 ;;
    --secret-key) secret_key="${2:?--secret-key needs a file}"; shift 2 ;;
    --edge-key) edge_key="${2:?--edge-key needs a file}"; shift 2 ;;
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
    --user) user="${2:?--user needs a name}"; shift 2 ;;
    --no-start) start=0; shift ;;
    --force-config) force_config=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

case "$board" in
  auto | pi | jetson | generic) ;;
  *) die "--board must be auto, pi, jetson or generic, got '$board'" ;;
esac
if [ -n "$threads" ] && ! [[ "$threads" =~ ^[1-9][0-9]*$ ]]; then
  die "--threads must be a whole number >= 1, got '$threads'"
fi
edge_re='^[][A-Za-z0-9._:/-]+$'
if [ -n "$edge" ] && ! [[ "$edge" =~ $edge_re ]]; then
  die "--edge must be HOST, HOST:PORT or tcp://HOST:PORT, got '$edge'"
fi
if [[ ! "$user" =~ ^[a-z_][a-z0-9_-]*$ ]]; then
  die "--user must be a plain account name, got '$user'"
fi

# ---------------------------------------------------------------------------------------
# Helpers: in a dry run every command and file is printed instead of run or written.

step() {
  echo "== $*"
}

run() {
  if [ "$dry_run" = 1 ]; then
    printf '[dry-run] '
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# write_file PATH MODE OWNER < content
write_file() {
  local path="$1" mode="$2" owner="$3" content
  content="$(cat)"
  if [ "$dry_run" = 1 ]; then
    echo "[dry-run] write $path (mode $mode, owner $owner):"
    printf '%s\n' "$content" | sed 's/^/    | /'
    return
  fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" > "$path.tmp"
  chmod "$mode" "$path.tmp"
  chown "$owner" "$path.tmp"
  mv "$path.tmp" "$path"
}

toml_string() {
  local s="${1//\\/\\\\}"
  printf '"%s"' "${s//\"/\\\"}"
}

# ---------------------------------------------------------------------------------------
# 1. Which board is this?

detect_board() {
  local model=""
  if [ -r /proc/device-tree/model ]; then
    model="$(tr -d '\0' < /proc/device-tree/model)"
  fi
  if [ -e /etc/nv_tegra_release ] || [[ "$model" == *Jetson* ]]; then
    echo jetson
  elif [[ "$model" == *"Raspberry Pi"* ]]; then
    echo pi
  else
    echo generic
  fi
}

machine="$(uname -m)"
if [ "$board" = auto ]; then
  board="$(detect_board)"
  step "board detected: $board ($machine)"
else
  step "board forced: $board (this machine: $machine)"
fi

os_id=""
os_codename=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  os_id="$(. /etc/os-release && echo "${ID:-}")"
  # shellcheck disable=SC1091
  os_codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
fi

# Checks that only make sense on the real board; a dry run with --board reports them only.
check_board() {
  case "$board" in
    pi)
      if [ "$machine" = armv7l ] || [ "$machine" = armv6l ]; then
        echo "32-bit Raspberry Pi OS is not supported (torch has no 32-bit ARM builds):" \
          "flash 'Raspberry Pi OS (64-bit)' Bookworm" >&2
        return 2
      fi
      [ "$machine" = aarch64 ] || { echo "a Pi must run a 64-bit OS (aarch64), got $machine" >&2; return 2; }
      [ "$os_codename" = bookworm ] || echo "warning: tested on Raspberry Pi OS Bookworm, this is '$os_codename'" >&2
      ;;
    jetson)
      [ "$machine" = aarch64 ] || { echo "a Jetson runs aarch64, got $machine" >&2; return 2; }
      if [ -r /etc/nv_tegra_release ] && ! grep -q '^# R36' /etc/nv_tegra_release; then
        echo "warning: JetPack 6 (L4T R36) expected, /etc/nv_tegra_release says:" \
          "$(head -n1 /etc/nv_tegra_release)" >&2
      fi
      ;;
    generic)
      case "$machine" in
        aarch64 | x86_64) ;;
        *) echo "machine $machine is not supported: torch builds exist for aarch64 and x86_64" >&2; return 2 ;;
      esac
      ;;
  esac
}

if [ "$dry_run" = 1 ]; then
  check_board || echo "[dry-run] (on a real $board board the check above stops the install)"
else
  check_board || exit 2
  [ "$(id -u)" = 0 ] || die "run as root (sudo), or add --dry-run to see what would be done"
fi

# Settings each board type differs in.
case "$board" in
  pi)
    apt_packages=(python3-venv python3-pip)
    default_index="$PI_TORCH_INDEX"
    extra_groups=""
    ;;
  jetson)
    # NVIDIA's torch links OpenBLAS from the system; the GPU devices belong to video/render.
    apt_packages=(python3-venv python3-pip libopenblas-dev)
    default_index="$JETSON_TORCH_INDEX"
    extra_groups="video,render"
    ;;
  generic)
    apt_packages=(python3-venv python3-pip)
    default_index="$GENERIC_TORCH_INDEX"
    extra_groups=""
    ;;
esac
torch_index="${torch_index:-$default_index}"
torch_spec="${torch_spec:-torch}"
venv="$prefix/venv"
config="$etc_dir/device.toml"

# What hiertrain-edge itself is installed from.
if [ -z "$source_spec" ]; then
  if [ -n "$wheelhouse" ]; then
    source_spec="hiertrain-edge"
  elif [ -f "$repo/pyproject.toml" ]; then
    source_spec="$repo"
  elif compgen -G "$here/hiertrain_edge-*.whl" > /dev/null; then
    wheels=("$here"/hiertrain_edge-*.whl)
    source_spec="${wheels[-1]}"
  else
    die "no hiertrain-edge to install here: give --wheelhouse DIR or --source WHEEL|FOLDER"
  fi
fi
if [ -n "$wheelhouse" ] && [ "$dry_run" = 0 ] && ! compgen -G "$wheelhouse/torch-*.whl" > /dev/null; then
  die "wheelhouse $wheelhouse has no torch wheel: build it with cross/build_wheelhouse.sh"
fi

echo "   os: ${os_id:-unknown} ${os_codename:-}; install to $venv as user $user"
if [ -n "$wheelhouse" ]; then
  echo "   offline: every package from the wheelhouse $wheelhouse"
else
  echo "   torch: $torch_spec from $torch_index"
fi
echo "   hiertrain-edge from: $source_spec"

# ---------------------------------------------------------------------------------------
# 2. System packages (skipped offline when venv support is already there).

step "system packages"
if [ -n "$wheelhouse" ] && python3 -c 'import ensurepip, venv' 2> /dev/null; then
  echo "   python3 with venv present; offline install, apt skipped"
else
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${apt_packages[@]}"
fi

# ---------------------------------------------------------------------------------------
# 3. The unprivileged account the service runs as.

step "service account $user"
if id "$user" > /dev/null 2>&1; then
  echo "   account $user exists"
else
  run useradd --system --home-dir "$state_dir" --no-create-home --shell /usr/sbin/nologin \
    --user-group "$user"
fi
if [ -n "$extra_groups" ]; then
  for g in ${extra_groups//,/ }; do
    if [ "$dry_run" = 1 ] || getent group "$g" > /dev/null; then
      run usermod --append --groups "$g" "$user"
    fi
  done
fi
run install -d -m 0750 -o "$user" -g "$user" "$state_dir"

# ---------------------------------------------------------------------------------------
# 4. Virtual environment, torch for this board, hiertrain-edge.

step "virtual environment $venv"
run install -d -m 0755 "$prefix"
run python3 -m venv "$venv"
if [ -n "$wheelhouse" ]; then
  run "$venv/bin/pip" install --no-index --find-links "$wheelhouse" "$source_spec"
else
  run "$venv/bin/pip" install --upgrade pip
  run "$venv/bin/pip" install --index-url "$torch_index" "$torch_spec"
  run "$venv/bin/pip" install "$source_spec"
fi
run install -m 0644 "$here/README.md" "$prefix/README-board.md"
run install -m 0755 "$here/selftest.sh" "$prefix/selftest.sh"

# ---------------------------------------------------------------------------------------
# 5. Self-test in a child process: a crash (illegal instruction) is reported, not fatal.

step "self-test"
selftest_ok=1
if [ "$dry_run" = 1 ]; then
  run "$here/selftest.sh" "$venv/bin/python"
else
  set +e
  "$here/selftest.sh" "$venv/bin/python"
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    selftest_ok=0
    echo "   the self-test did not pass (exit $rc); the service will be installed but not" \
      "enabled. Fix torch (see above), then: sudo $prefix/selftest.sh $venv/bin/python &&" \
      "sudo systemctl enable --now $unit_name" >&2
  fi
fi

# ---------------------------------------------------------------------------------------
# 6. Keys and the settings file.

step "settings $config"
run install -d -m 0755 "$etc_dir"
key_lines=""
if [ -n "$secret_key$edge_key" ]; then
  run install -d -m 0750 -o root -g "$user" "$etc_dir/keys"
fi
if [ -n "$secret_key" ]; then
  # Owner-only: the security layer refuses key files that others can read.
  run install -m 0600 -o "$user" -g "$user" "$secret_key" "$etc_dir/keys/device.key_secret"
  key_lines+="secret = $(toml_string "$etc_dir/keys/device.key_secret")"$'\n'
fi
if [ -n "$edge_key" ]; then
  run install -m 0644 -o root -g root "$edge_key" "$etc_dir/keys/edge.key"
  key_lines+="edge_public = $(toml_string "$etc_dir/keys/edge.key")"$'\n'
fi

if [ -e "$config" ] && [ "$force_config" = 0 ]; then
  echo "   $config exists; kept (use --force-config to replace it)"
  [ -z "$edge" ] || echo "   note: --edge $edge is NOT written; edit $config or use --force-config"
else
  [ -n "$edge" ] || [ "$dry_run" = 1 ] || die "give --edge HOST[:PORT]: the settings file needs it"
  {
    echo "# hiertrain-edge board settings, read by 'hiertrain-edge join' (see $prefix/README-board.md)."
    echo "# Written by install.sh on $(date -u +%Y-%m-%d) for board type $board."
    echo "edge = $(toml_string "${edge:-EDGE_HOST}")"
    if [ -n "$data" ]; then
      echo "data = $(toml_string "$data")"
    else
      echo "# data = \"/var/lib/hiertrain-edge/data\"   # default: the bundled MNIST test set"
    fi
    echo "report = $(toml_string "$state_dir/report.json")"
    echo "out = $(toml_string "$state_dir/out")"
    if [ -n "$threads" ]; then
      echo "threads = $threads"
    else
      echo "# threads = 4"
    fi
    echo "test_fraction = 0.2"
    if [ -n "$key_lines" ]; then
      printf '\n[keys]\n%s' "$key_lines"
    fi
  } | write_file "$config" 0640 "root:$user"
fi

# ---------------------------------------------------------------------------------------
# 7. The systemd unit: join as $user, restart on failure, journald, sandboxed.

step "systemd unit $unit_dir/$unit_name"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@USER@|$user|g" -e "s|@CONFIG@|$config|g" \
  "$here/hiertrain-edge-join.service" | write_file "$unit_dir/$unit_name" 0644 root:root
if [ "$board" = jetson ]; then
  # CUDA needs /dev/nvhost-*, /dev/nvmap and friends, which PrivateDevices=yes hides.
  printf '%s\n' "# Jetson: the GPU devices are needed for CUDA." "[Service]" \
    "PrivateDevices=no" "SupplementaryGroups=video render" |
    write_file "$unit_dir/$unit_name.d/jetson.conf" 0644 root:root
fi

# systemctl works offline (enable = symlinks); starting needs a running systemd.
systemd_running=0
if [ -d /run/systemd/system ]; then
  systemd_running=1
fi
if ! command -v systemctl > /dev/null && [ "$dry_run" = 0 ]; then
  echo "   systemctl not found: start the service's command by hand:" \
    "sudo -u $user $venv/bin/hiertrain-edge join --config $config"
elif [ "$selftest_ok" = 0 ]; then
  echo "   not enabled: the self-test did not pass"
else
  if [ "$systemd_running" = 1 ] || [ "$dry_run" = 1 ]; then
    run systemctl daemon-reload
  fi
  if [ "$start" = 1 ] && { [ "$systemd_running" = 1 ] || [ "$dry_run" = 1 ]; }; then
    run systemctl enable --now "$unit_name"
  else
    run systemctl enable "$unit_name"
    echo "   enabled; it starts at the next boot (or: sudo systemctl start $unit_name)"
  fi
fi

step "done"
echo "   follow the board: journalctl -u $unit_name -f"
echo "   on the edge you will see: 'job ... started with board ...'"
if [ "$selftest_ok" = 0 ]; then
  exit 3
fi
