#!/usr/bin/env bash
# Build an offline wheelhouse for aarch64 boards: hiertrain-edge's own wheel plus every
# dependency, as binary wheels for one Python version. Copy the folder to a board without
# internet and run `firmware_scripts/install.sh --wheelhouse DIR` there.
#
#   cross/build_wheelhouse.sh [--python 3.11] [--out DIR] [--torch SPEC] [--torch-index URL]
#
# Python: 3.11 for Raspberry Pi OS Bookworm and Debian 12, 3.10 for JetPack 6 (Ubuntu 22.04).
#
# Which torch (see docs in firmware_scripts/README.md, "PyTorch sources"):
#   default      torch==2.10.0 from PyPI. PyPI's aarch64 torch wheels up to 2.10 are CPU-only;
#                from 2.11 on they depend on CUDA 13 packages (several GB, useless on a Pi).
#   --torch-index https://download.pytorch.org/whl/cpu --torch 'torch==2.13.0+cpu'
#                PyTorch's own CPU builds for aarch64 (newer releases without CUDA).
#   Jetson       --python 3.10 --torch-index https://pypi.jetson-ai-lab.io/jp6/cu126
#                --torch torch   (NVIDIA's CUDA builds for JetPack 6, newest there).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python_version="3.11"
out=""
torch_spec="torch==2.10.0"
torch_index=""
host_python="${PYTHON:-python3}"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --python) python_version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --torch) torch_spec="$2"; shift 2 ;;
    --torch-index) torch_index="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build_wheelhouse.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$python_version" in
  3.[0-9] | 3.[0-9][0-9]) ;;
  *) echo "build_wheelhouse.sh: --python must look like 3.11, got '$python_version'" >&2; exit 2 ;;
esac
out="${out:-$repo/dist/wheelhouse-aarch64-cp${python_version/./}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# 1. The project's own wheel (pure Python, so one wheel fits every board).
echo "== building the hiertrain-edge wheel into $out"
rm -f "$out"/hiertrain_edge-*.whl
"$host_python" -m pip wheel --no-deps --quiet --wheel-dir "$out" "$repo"
own_wheels=("$out"/hiertrain_edge-*.whl)
own_wheel="${own_wheels[0]}"

# 2. Every dependency for aarch64 and this Python, resolved with the target's markers.
echo "== downloading dependencies for aarch64, CPython $python_version"
index_args=()
if [ -n "$torch_index" ]; then
  index_args=(--torch-index "$torch_index")
fi
"$host_python" "$here/resolve_wheelhouse.py" --python "$python_version" --out "$out" \
  "${index_args[@]}" "$own_wheel" "$torch_spec"

# 3. A record of what is inside, for the board's install log.
(cd "$out" && sha256sum ./*.whl > SHA256SUMS)
wheels=("$out"/*.whl)
echo "== wheelhouse ready: $out ($(du -sh "$out" | cut -f1), ${#wheels[@]} wheels)"
