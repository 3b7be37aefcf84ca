"""CurveZMQ link security: key files, allow-lists checked over ZAP, and refused handshakes.

Every link is encrypted and authenticated with CurveZMQ (RFC 26) unless it stays on
loopback or the operator passes `--insecure`. A listener (the edge for boards, the
cloud for edges) admits only clients whose public keys it lists: a ZAP handler (RFC 27)
thread per ZeroMQ context answers libzmq's questions, one ZAP domain per listener. A
refused client cannot see the ZAP answer on a DEALER socket, so both sides watch a
socket monitor and turn a failed handshake into a log line (server) or a
`PeerRefusedError` naming the endpoint and the likely cause (client).

Key files use ZeroMQ's certificate format (`zmq.auth.load_certificate` reads them):
`NAME.key` holds the public key, `NAME.key_secret` the key pair, readable only by its
owner.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from hiertrain_edge.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
KEY_DIR_MODE = 0o700
ALLOWED_DIR = "allowed"  # inside a --keys folder: public keys this tier admits
SERVER_KEY_FILE = "server.key"  # inside a --keys folder: the server this tier connects to
_Z85_KEY_CHARS = 40  # a 32-byte Curve25519 key in Z85
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
_ZAP_POLL_MS = 200
REFUSAL_LOG_EVERY_S = 30.0  # one log line per refused key/cause per this many seconds
# A client gives up after this many failed handshakes without detail (the server just
# hangs up, which is what a wrong server key looks like from the client's side).
NO_DETAIL_FAILURES = 4  # consecutive: a tier dying mid-handshake causes one, not four

_MONITOR_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


_NEEDS_CURVE = (
    "requires CurveZMQ encryption; give this tier its key pair and the server's public key "
    "(--keys DIR or --secret-key/--server-key)"
)


class PeerRefusedError(TransportError):
    """A peer refused this tier's handshake (unlisted key, wrong key, or no encryption)."""


# --- key files ----------------------------------------------------------------------


def _key_file_text(name: str, public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret is not None else "Public"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"#   ****  Generated on {when} by hiertrain-edge keys generate  ****",
        f"#   ZeroMQ CURVE {kind} Certificate",
        "#   Keep this file readable by its owner only; never copy it to another machine."
        if secret is not None
        else "#   Copy this file to the tiers that must admit or trust this one.",
        "",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_new(path: Path, text: str, mode: int, force: bool) -> None:
    """Write a file created with `mode` from the start, so it is never briefly readable."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise ConfigError(f"key file {path} already exists; pass --force to replace it") from exc
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits, an old file may have added some
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(out_dir: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write `NAME.key` (public, 0644) and `NAME.key_secret` (key pair, 0600) into `out_dir`.

    Returns:
        The public and the secret key file paths.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ConfigError(
            f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    out = Path(out_dir)
    out.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    public_path, secret_path = out / f"{name}{PUBLIC_SUFFIX}", out / f"{name}{SECRET_SUFFIX}"
    _write_new(secret_path, _key_file_text(name, public, secret), SECRET_FILE_MODE, force)
    _write_new(public_path, _key_file_text(name, public, None), PUBLIC_FILE_MODE, force)
    log.info("wrote key pair %s and public key %s", secret_path, public_path)
    return public_path, secret_path


def _read_key(text: str, which: str, path: Path) -> bytes | None:
    m = re.search(rf'^\s*{which}\s*=\s*"([^"]*)"\s*$', text, re.MULTILINE)
    if m is None:
        return None
    key = m.group(1).encode("ascii", "replace")
    if len(key) != _Z85_KEY_CHARS:
        raise ConfigError(
            f"{which} in {path} has {len(key)} characters; a Z85 CurveZMQ key has {_Z85_KEY_CHARS}"
        )
    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"{which} in {path} is not valid Z85 text") from exc
    return key


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} {path} is a folder; expected a key file") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def check_private(path: str | Path) -> None:
    """Refuse a secret key file that anyone but its owner may read or write."""
    p = Path(path)
    if os.name != "posix":
        return  # POSIX mode bits only; elsewhere the file system's ACLs decide
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"secret key file {p} is open to group or others (mode {mode:04o}); "
            f"only its owner may read it: run chmod 600 {p}"
        )


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key in a `.key` (or `.key_secret`) file."""
    p = Path(path)
    key = _read_key(_read_text(p, "public key file"), "public-key", p)
    if key is None:
        raise ConfigError(f"{p} holds no public-key line; is it a CurveZMQ key file?")
    return key


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """The Z85 (public, secret) key pair in a `.key_secret` file with owner-only access."""
    p = Path(path)
    text = _read_text(p, "secret key file")
    if re.search(r"^\s*secret-key\s*=", text, re.MULTILINE) is None:
        raise ConfigError(
            f"{p} holds no secret-key line; give the NAME{SECRET_SUFFIX} file, "
            f"not NAME{PUBLIC_SUFFIX}"
        )
    check_private(p)  # before the key is even parsed: an exposed key is refused whole
    secret = _read_key(text, "secret-key", p)
    assert secret is not None
    public = zmq.curve_public(secret)
    listed = _read_key(text, "public-key", p)
    if listed is not None and listed != public:
        raise ConfigError(f"public-key in {p} does not belong to its secret-key")
    return public, secret


def load_allowed(paths: list[str | Path]) -> frozenset[bytes]:
    """Public keys from `.key` files and from every `*.key` file in the given folders."""
    keys: set[bytes] = set()
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files = sorted(p.glob(f"*{PUBLIC_SUFFIX}"))
            if not files:
                raise ConfigError(f"allow-list folder {p} holds no *{PUBLIC_SUFFIX} files")
            keys.update(load_public_key(f) for f in files)
        else:
            keys.add(load_public_key(p))
    return frozenset(keys)


# --- one tier's settings ---------------------------------------------------------------


@dataclass(frozen=True)
class Security:
    """One tier's link security: its key pair, the clients it admits, the server it trusts.

    A listener is encrypted when the tier has a key pair, and then admits only
    `allowed`; a link is encrypted when `server_key` is set. Without keys a link stays
    plaintext, which is refused off loopback unless `insecure` is set.
    """

    public_key: bytes | None = None  # Z85
    secret_key: bytes | None = field(default=None, repr=False)
    allowed: frozenset[bytes] = frozenset()
    server_key: bytes | None = None
    insecure: bool = False

    @classmethod
    def from_files(
        cls,
        keys_dir: str | Path | None = None,
        secret_key: str | Path | None = None,
        allow: list[str | Path] | None = None,
        server_key: str | Path | None = None,
        insecure: bool = False,
    ) -> Security:
        """Settings from a keys folder and explicit files; the explicit files win.

        A keys folder holds exactly one `NAME.key_secret` (this tier's key pair), an
        `allowed/` folder of public keys it admits and `server.key`, the public key of
        the tier it connects to; each part is optional.
        """
        allow = list(allow or [])
        if keys_dir is not None:
            d = Path(keys_dir)
            if not d.is_dir():
                raise ConfigError(f"keys folder {d} does not exist")
            if secret_key is None:
                found = sorted(d.glob(f"*{SECRET_SUFFIX}"))
                if len(found) > 1:
                    names = ", ".join(f.name for f in found)
                    raise ConfigError(
                        f"keys folder {d} holds {len(found)} key pairs ({names}); "
                        "keep one or pick it with --secret-key"
                    )
                secret_key = found[0] if found else None
            if not allow and (d / ALLOWED_DIR).is_dir():
                allow = [d / ALLOWED_DIR]
            if server_key is None and (d / SERVER_KEY_FILE).is_file():
                server_key = d / SERVER_KEY_FILE
        public = secret = None
        if secret_key is not None:
            public, secret = load_keypair(secret_key)
        if allow and secret is None:
            raise ConfigError(
                "an allow-list (--allow) needs this tier's own key pair (--secret-key or --keys)"
            )
        if server_key is not None and secret is None:
            raise ConfigError(
                "a server key (--server-key) needs this tier's own key pair, which the server "
                "must list (--secret-key or --keys)"
            )
        return cls(
            public_key=public,
            secret_key=secret,
            allowed=load_allowed(allow) if allow else frozenset(),
            server_key=load_public_key(server_key) if server_key is not None else None,
            insecure=insecure,
        )


def is_loopback(address: str) -> bool:
    """Whether a ZeroMQ endpoint never leaves this machine (loopback, ipc, inproc)."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if ";" in host:  # tcp://source;destination
        host = host.split(";")[-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, an interface or `*`: may be reachable from outside


def _check_plaintext(security: Security | None, address: str, role: str) -> None:
    if is_loopback(address):
        log.debug("%s on %s is plaintext (loopback only)", role, address)
        return
    if security is not None and security.insecure:
        log.warning(
            "%s on %s is PLAINTEXT (--insecure): anyone who can reach it can read the "
            "activations and join the job",
            role,
            address,
        )
        return
    raise ConfigError(
        f"{role} on {address} would be plaintext off loopback; give this tier its keys "
        "(--keys DIR, see `hiertrain-edge keys generate`) or pass --insecure to accept "
        "an unencrypted, unauthenticated link"
    )


# --- ZAP: the allow-lists -------------------------------------------------------------


class _RateLimitedLog:
    """One WARNING per key per interval, with the count of repeats in between."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: tuple[str, ...], fmt: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last, repeats = self._last.get(key, (-1e18, 0))
            if now - last < REFUSAL_LOG_EVERY_S:
                self._last[key] = (last, repeats + 1)
                return
            self._last[key] = (now, 0)
        if repeats:
            fmt += " (%d more times since the last report)"
            args = (*args, repeats)
        log.warning(fmt, *args)


_refusals = _RateLimitedLog()


class _ZapHandler:
    """The one ZAP handler of a ZeroMQ context, answering for every secured listener in it.

    It lives as long as the context: rebinding the fixed ZAP endpoint right after a
    close can fail, and libzmq admits every CURVE client when no handler is bound.
    """

    _by_context: dict[int, _ZapHandler] = {}
    _create_lock = threading.Lock()

    def __init__(self, ctx: zmq.Context) -> None:
        self.ctx = ctx
        self.domains: dict[str, tuple[frozenset[bytes], str]] = {}
        self.lock = threading.Lock()
        self._counter = 0
        ready = threading.Event()
        self._error: Exception | None = None
        self.thread = threading.Thread(
            target=self._serve, args=(ready,), name="hiertrain-zap", daemon=True
        )
        self.thread.start()
        ready.wait()
        if self._error is not None:
            raise TransportError(f"cannot start the ZAP handler: {self._error}")

    @classmethod
    def of(cls, ctx: zmq.Context) -> _ZapHandler:
        with cls._create_lock:
            handler = cls._by_context.get(id(ctx))
            if handler is None or not handler.thread.is_alive() or handler.ctx is not ctx:
                handler = cls(ctx)
                cls._by_context[id(ctx)] = handler
            return handler

    def register(self, allowed: frozenset[bytes], where: str) -> str:
        with self.lock:
            self._counter += 1
            domain = f"hiertrain-{self._counter}"
            self.domains[domain] = (allowed, where)
        return domain

    def unregister(self, domain: str) -> None:
        with self.lock:
            self.domains.pop(domain, None)

    def _serve(self, ready: threading.Event) -> None:
        try:
            sock = self.ctx.socket(zmq.REP)
            sock.linger = 0
            sock.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = exc
            ready.set()
            return
        ready.set()
        try:
            while True:
                if not sock.poll(_ZAP_POLL_MS):
                    continue
                request = sock.recv_multipart()
                sock.send_multipart(self._answer(request))
        except zmq.ContextTerminated:
            pass
        finally:
            sock.close(linger=0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """One ZAP reply: version, request id, status code, status text, user id, metadata."""
        if len(request) < 6:
            return [
                b"1.0",
                request[1] if len(request) > 1 else b"",
                b"500",
                b"bad request",
                b"",
                b"",
            ]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]

        def reply(code: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
            return [b"1.0", request_id, code, text, user, b""]

        if version != b"1.0":
            return reply(b"500", b"unsupported ZAP version")
        peer = address.decode("ascii", "replace")
        with self.lock:
            entry = self.domains.get(domain.decode("ascii", "replace"))
        if entry is None:
            return reply(b"400", b"unknown domain")
        allowed, where = entry
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            _refusals.warning(
                (where, peer, "mechanism"),
                "refused a client from %s on %s: it did not use CurveZMQ (mechanism %s)",
                peer,
                where,
                mechanism.decode("ascii", "replace"),
            )
            return reply(b"400", b"CURVE required")
        key = z85.encode(credentials[0])
        if key not in allowed:
            _refusals.warning(
                (where, key.decode()),
                "refused a client from %s on %s: its public key %s is not on the allow-list",
                peer,
                where,
                key.decode(),
            )
            return reply(b"400", b"public key not allowed")
        log.info("admitted a client from %s on %s with public key %s", peer, where, key.decode())
        return reply(b"200", b"OK", key)


# --- applying the settings to sockets -----------------------------------------------------


class HandshakeWatch:
    """A socket monitor that turns failed handshakes into errors (client) or logs (server),
    and says which connections opened and dropped.

    Connections are named by their file descriptor, the value ZeroMQ gives with every
    connection event and with every message it delivers (`ZMQ_SRCFD`); events come in the
    order they happened, so a descriptor that a new connection reuses is never mistaken
    for the old one's as long as the events before a message are handled before it.
    """

    def __init__(
        self, sock: zmq.Socket, where: str, server: bool, curve: bool, own_key: bytes | None = None
    ) -> None:
        self.where, self.server, self.curve = where, server, curve
        self.own_key = own_key.decode() if own_key else None
        self.sock = sock
        self.monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        self._no_detail = 0
        self.open: set[int] = set()  # descriptors of the connections open now
        # Descriptors of the connections that dropped since the transport last looked, in
        # the order they dropped.
        self.dropped: list[int] = []

    def pending(self) -> bool:
        """Whether events wait (a ZMQ_EVENTS query: no system call, and the GIL is kept)."""
        return bool(self.monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def check(self) -> None:
        """Handle every pending event; raise `PeerRefusedError` on a client's refusal."""
        while self.pending():
            try:
                event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            kind = event["event"]
            if kind == zmq.EVENT_ACCEPTED or kind == zmq.EVENT_CONNECTED:
                self.open.add(int(event["value"]))
                continue
            if kind == zmq.EVENT_DISCONNECTED:
                # A peer that died, or fell silent past the heartbeat timeout.
                self.open.discard(int(event["value"]))
                self.dropped.append(int(event["value"]))
                continue
            error = self._explain(kind, event["value"])
            if error is None:
                continue
            if self.server:
                _refusals.warning(
                    (self.where, error), "refused a client on %s: %s", self.where, error
                )
            else:
                raise PeerRefusedError(f"{self.where} refused this tier: {error}")

    def _explain(self, kind: int, value: int) -> str | None:
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._no_detail = 0
            return None
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            if self.server:
                return None  # the ZAP handler already logged it, with the key
            return (
                f"the server does not list this tier's public key {self.own_key} "
                f"(ZAP status {value}); copy this tier's NAME.key into the server's "
                "allow-list (--allow)"
            )
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                if self.server:
                    return (
                        "a plaintext client tried a CurveZMQ listener"
                        if self.curve
                        else "an encrypting client tried a plaintext listener"
                    )
                if self.curve:
                    return (
                        "the server speaks plaintext but this tier encrypts; give the server "
                        "its keys, or drop --server-key here (plaintext is loopback-only)"
                    )
                return "the server " + _NEEDS_CURVE
            if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC and self.server:
                return (
                    "its encrypted handshake could not be opened; the client holds a wrong "
                    "public key for this server"
                )
            return f"handshake protocol error 0x{value:08x}"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and not self.server:
            self._no_detail += 1
            if self._no_detail >= NO_DETAIL_FAILURES:
                if self.curve:
                    return (
                        "the server hung up during the encrypted handshake; most likely "
                        "--server-key is not that server's public key (or the server speaks "
                        "plaintext)"
                    )
                return "the server hung up during the handshake; it most likely " + _NEEDS_CURVE
        return None

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close(linger=0)


def secure_listener(
    ctx: zmq.Context, sock: zmq.Socket, security: Security | None, where: str
) -> str | None:
    """Make a ROUTER a CurveZMQ server with an allow-list, or check plaintext is acceptable.

    Returns:
        The ZAP domain to release with `release_listener` when the socket closes.
    """
    if security is None or security.secret_key is None:
        _check_plaintext(security, where, "listener")
        return None
    if not security.allowed:
        raise ConfigError(
            f"the listener on {where} has a key pair but admits nobody; list the clients' "
            "public keys with --allow FILE_OR_DIR (or an allowed/ folder under --keys)"
        )
    handler = _ZapHandler.of(ctx)
    domain = handler.register(security.allowed, where)
    sock.curve_server = True
    sock.curve_secretkey = security.secret_key
    sock.curve_publickey = security.public_key
    sock.zap_domain = domain.encode()
    log.info(
        "listener on %s: CurveZMQ, public key %s, %d allowed client keys",
        where,
        security.public_key.decode(),  # type: ignore[union-attr]
        len(security.allowed),
    )
    return domain


def release_listener(ctx: zmq.Context, domain: str | None) -> None:
    if domain is not None:
        _ZapHandler.of(ctx).unregister(domain)


def secure_link(sock: zmq.Socket, security: Security | None, where: str) -> bool:
    """Make a DEALER a CurveZMQ client of the server's key, or check plaintext is acceptable.

    Returns:
        Whether the link is encrypted.
    """
    if security is None or security.server_key is None:
        _check_plaintext(security, where, "link")
        return False
    assert security.secret_key is not None and security.public_key is not None
    sock.curve_serverkey = security.server_key
    sock.curve_publickey = security.public_key
    sock.curve_secretkey = security.secret_key
    log.info(
        "link to %s: CurveZMQ, server key %s, own public key %s",
        where,
        security.server_key.decode(),
        security.public_key.decode(),
    )
    return True
