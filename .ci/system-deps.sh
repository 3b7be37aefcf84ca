#!/usr/bin/env bash
# System tools the test suite needs beyond Python: installed with apt when missing and
# when we are root (CI runs as root); otherwise the tests that need them say what is missing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
# tests/boards: shellcheck, systemd-analyze verify, cloud-init schema; the slow aarch64 smoke
# test (cross/smoke_aarch64.sh) also needs qemu-user-static, binfmt-support and debootstrap.
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v cloud-init >/dev/null || need+=(cloud-init)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static binfmt-support)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
