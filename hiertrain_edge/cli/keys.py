"""The `keys` command (generate and show CurveZMQ key pairs) and every tier's security flags."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hiertrain_edge.errors import ConfigError


def add_security_flags(
    p: argparse.ArgumentParser, admits: str | None, connects: str | None
) -> None:
    """The key flags of one tier: `admits` names its clients, `connects` its server."""
    g = p.add_argument_group(
        "security",
        "CurveZMQ keys (see `hiertrain-edge keys generate`); without keys a link is "
        "allowed only on loopback",
    )
    layout = ["NAME.key_secret (this tier's key pair)"]
    if admits:
        layout.append(f"allowed/*.key ({admits} it admits)")
    if connects:
        layout.append(f"server.key (the {connects}'s public key)")
    g.add_argument("--keys", metavar="DIR", help="keys folder holding " + ", ".join(layout))
    g.add_argument(
        "--secret-key", metavar="FILE", help="this tier's key pair (NAME.key_secret, mode 0600)"
    )
    if admits:
        g.add_argument(
            "--allow",
            metavar="FILE_OR_DIR",
            action="append",
            help=f"public key file of {admits} to admit, or a folder of them (repeatable)",
        )
    if connects:
        g.add_argument(
            "--server-key", metavar="FILE", help=f"the {connects}'s public key (NAME.key)"
        )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext links off loopback (logs a WARNING; activations travel in clear)",
    )


def security_from_args(
    args: argparse.Namespace,
    listens: Sequence[str | None] = (),
    server: str | None = None,
    server_role: str = "server",
):  # -> Security
    """The tier's `Security` from its flags.

    `listens` are the endpoints the tier binds (None: not bound), `server` the one it
    connects to, `server_role` what that is (edge, cloud). Where such a link leaves
    loopback and would be plaintext, the error says which file or flag is missing (the
    security layer itself can only say that keys are missing, not which part of --keys).
    """
    from hiertrain_edge.wire.security import Security

    keys = _checked_keys_folder(args.keys)
    security = Security.from_files(
        keys_dir=keys,
        secret_key=args.secret_key,
        allow=getattr(args, "allow", None),
        server_key=getattr(args, "server_key", None),
        insecure=args.insecure,
    )
    if not args.insecure:
        for address in listens:
            if address is not None:
                _check_listener(args, security, keys, address)
        if server is not None:
            _check_link(security, keys, server, server_role)
    return security


def _checked_keys_folder(value: str | None) -> Path | None:
    if value is None:
        return None
    d = Path(value)
    if d.exists() and not d.is_dir():
        raise ConfigError(
            f"--keys {d} is a file, not a folder; expected a folder holding NAME.key_secret "
            "(give a key pair file alone with --secret-key FILE)"
        )
    if not d.exists():
        raise ConfigError(f"keys folder {d} does not exist")
    return d


def _check_listener(args: argparse.Namespace, security, keys: Path | None, address: str) -> None:
    from hiertrain_edge.wire.security import SECRET_SUFFIX, is_loopback

    if security.secret_key is not None or is_loopback(address):
        return
    if keys is not None:
        raise ConfigError(
            f"keys folder {keys} holds no NAME{SECRET_SUFFIX} (this tier's key pair), which "
            f"the listener on {address} needs off loopback; make one with "
            f"`hiertrain-edge keys generate --out {keys} --name NAME`"
        )
    if getattr(args, "listen", None) is None:
        # The default binds every interface: say how to stay on this machine instead.
        raise ConfigError(
            f"the listener on {address} (the default) would be plaintext off loopback; "
            "on one machine pass --listen 127.0.0.1, else give this tier its keys (--keys "
            "DIR, see `hiertrain-edge keys generate`) or pass --insecure"
        )


def _check_link(security, keys: Path | None, address: str, role: str) -> None:
    from hiertrain_edge.wire.security import SECRET_SUFFIX, SERVER_KEY_FILE, is_loopback

    if keys is None or security.server_key is not None or is_loopback(address):
        return
    missing, remedy = [], []
    if security.secret_key is None:
        missing.append(f"no NAME{SECRET_SUFFIX} (this tier's key pair)")
        remedy.append(f"make one with `hiertrain-edge keys generate --out {keys} --name NAME`")
    missing.append(f"no {SERVER_KEY_FILE} (the {role}'s public key)")
    remedy.append(f"copy the {role}'s NAME.key there as {SERVER_KEY_FILE}")
    raise ConfigError(
        f"keys folder {keys} holds {' and '.join(missing)}, which the link to {address} "
        f"needs off loopback; {' and '.join(remedy)}"
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from hiertrain_edge.wire.security import generate_keypair

    public, secret = generate_keypair(args.out, args.name, force=args.force)
    print(f"key pair (keep on this machine, mode 0600): {secret}")
    print(f"public key (copy to the tiers that admit or trust this one): {public}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from hiertrain_edge.wire.security import SECRET_SUFFIX, load_keypair, load_public_key

    for f in args.files:
        key = load_keypair(f)[0] if Path(f).name.endswith(SECRET_SUFFIX) else load_public_key(f)
        print(f"{f}: {key.decode()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make and inspect CurveZMQ key pairs for the links")
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    g = ksub.add_parser(
        "generate", help="write NAME.key (public) and NAME.key_secret (owner-only) into DIR"
    )
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    g.add_argument("--name", required=True, help="key name, e.g. edge, cloud or board-17")
    g.add_argument("--force", action="store_true", help="replace existing key files")
    g.set_defaults(func=cmd_generate, tier="keys")

    s = ksub.add_parser("show", help="print the public key in key files")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.set_defaults(func=cmd_show, tier="keys")
