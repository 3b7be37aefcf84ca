#!/usr/bin/env bash
# First boot of a freshly flashed Raspberry Pi OS card, run as root by the Pi's first-run
# mechanism (systemd.run= on the kernel command line, before the network is up). It moves the
# files prepare_card.sh put on the boot partition to the root file system, takes the secret
# key off the FAT partition, and enables a one-shot unit that runs install.sh once the network
# is online (or at once from the wheelhouse when there is one). That unit disables itself
# after a successful install and retries at every boot until then.
#
#   bash /boot/firmware/hiertrain-edge/firstboot.sh
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
setup="/var/lib/hiertrain-edge-setup"
unit="/etc/systemd/system/hiertrain-edge-setup.service"

[ -f "$src/settings.env" ] || { echo "firstboot.sh: $src/settings.env missing" >&2; exit 2; }
install -d -m 0700 "$setup"
cp -r "$src/." "$setup/"
# The boot partition is FAT: anyone who reads the card reads it. Keep the secret only here.
rm -f "$src"/*.key_secret
chmod 0600 "$setup"/*.key_secret 2> /dev/null || true

cat > "$unit" << UNIT
[Unit]
Description=hiertrain-edge first-boot install (runs until it succeeds once)
Wants=network-online.target
After=network-online.target time-sync.target

[Service]
Type=oneshot
EnvironmentFile=$setup/settings.env
ExecStart=/bin/bash $setup/install.sh \$INSTALL_ARGS
ExecStartPost=/bin/systemctl disable hiertrain-edge-setup.service
StandardOutput=journal+console
TimeoutStartSec=3600

[Install]
WantedBy=multi-user.target
UNIT
install -d /etc/systemd/system/multi-user.target.wants
ln -sf "$unit" /etc/systemd/system/multi-user.target.wants/hiertrain-edge-setup.service
echo "hiertrain-edge: install scheduled for when the network is up (hiertrain-edge-setup.service)"
