"""The `keys` command (generate and show CurveZMQ key pairs) and every tier's security flags."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def security_from_args(args: argparse.Namespace):  # -> Security
    """The tier's `Security` from its flags."""
    from hiertrain_edge.wire.security import Security

    return Security.from_files(
        keys_dir=args.keys,
        secret_key=args.secret_key,
        allow=getattr(args, "allow", None),
        server_key=getattr(args, "server_key", None),
        insecure=args.insecure,
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
