"""Download every wheel a set of requirements needs on another platform (aarch64 by default).

`pip download --platform X` evaluates environment markers against the machine it runs on,
not the target: on x86_64 it asks for `nvidia-*; platform_machine == "x86_64"` wheels that
do not exist for aarch64 and fails. This helper resolves the dependency closure itself with
the target's marker environment, downloading with `pip download --no-deps` round by round
until no new requirement appears, then keeps exactly one file per project.

Usage (build_wheelhouse.sh calls it):
    python3 cross/resolve_wheelhouse.py --python 3.11 --out WHEELHOUSE REQ_OR_WHEEL...
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# Ubuntu 22.04 (JetPack 6) has glibc 2.35, Debian 12 / Raspberry Pi OS Bookworm 2.36: any
# manylinux wheel up to 2.35 runs on both.
GLIBC_MAX_MINOR = 35
MAX_ROUNDS = 20


def platform_tags(machine: str) -> list[str]:
    tags = [f"manylinux2014_{machine}"]
    tags += [f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_MAX_MINOR + 1)]
    return tags + [f"linux_{machine}"]


def marker_env(python: str, machine: str) -> dict[str, str]:
    full = python if python.count(".") == 2 else f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": ".".join(python.split(".")[:2]),
        "sys_platform": "linux",
    }


def wheel_requirements(path: Path, env: dict[str, str], extras: set[str]) -> list[Requirement]:
    """Requires-Dist of a wheel that apply on the target (with the given extras)."""
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(zf.read(meta).decode())
    out = []
    for line in headers.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None:
            wanted = extras or {""}
            if not any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
                continue
        req.marker = None
        out.append(req)
    return out


def pip_download(reqs: list[str], out: Path, python: str, machine: str, index: str | None):
    abi = "cp" + python.replace(".", "")[:3]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    for tag in platform_tags(machine):
        cmd += ["--platform", tag]
    cmd += ["--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "none"]
    cmd += ["--abi", "abi3", "-d", str(out)]
    if index:
        cmd += ["--index-url", index]
    print("+", " ".join(cmd[3:7]), "...", " ".join(reqs), flush=True)
    subprocess.run(cmd + reqs, check=True)


def chosen_files(reqs: list[str], out: Path, python: str, machine: str) -> dict[str, Path]:
    """The one file pip picks for each requirement from the wheelhouse alone (offline)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd += ["--no-deps", "--no-index", "--find-links", str(out), "--target", tmp]
        cmd += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
        for tag in platform_tags(machine):
            cmd += ["--platform", tag]
        cmd += ["--report", str(report), "-q"]
        subprocess.run(cmd + reqs, check=True)
        data = json.loads(report.read_text())
    files = {}
    for item in data["install"]:
        url = item["download_info"]["url"]
        name = canonicalize_name(item["metadata"]["name"])
        files[name] = out / Path(url.split("://", 1)[-1]).name
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", required=True, help="target Python, e.g. 3.11")
    ap.add_argument("--machine", default="aarch64")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--torch-index", help="index URL for torch only (default: pip's index)")
    ap.add_argument("requirements", nargs="+", help="requirements or local wheel files")
    a = ap.parse_args()
    if not re.fullmatch(r"3\.\d+", a.python):
        ap.error(f"--python must look like 3.11, got {a.python!r}")
    a.out.mkdir(parents=True, exist_ok=True)
    env = marker_env(a.python, a.machine)

    # Seed: local wheels contribute their own requirements; strings are taken as they are.
    # A requirement given on the command line wins over what a wheel asks for (e.g. torch==X).
    pinned: dict[str, Requirement] = {}
    wanted: dict[str, set[str]] = {}
    for item in a.requirements:
        if item.endswith(".whl") and Path(item).exists():
            for req in wheel_requirements(Path(item), env, set()):
                wanted.setdefault(canonicalize_name(req.name), set()).add(str(req))
        else:
            req = Requirement(item)
            pinned[canonicalize_name(req.name)] = req
    seen_files: set[Path] = set()

    for _ in range(MAX_ROUNDS):
        reqs = {name: sorted(specs) for name, specs in wanted.items() if name not in pinned}
        flat = [s for specs in reqs.values() for s in specs] + [str(r) for r in pinned.values()]
        torch_reqs = [s for s in flat if canonicalize_name(Requirement(s).name) == "torch"]
        other = [s for s in flat if s not in torch_reqs]
        if torch_reqs and a.torch_index:
            pip_download(torch_reqs, a.out, a.python, a.machine, a.torch_index)
            pip_download(other, a.out, a.python, a.machine, None)
        else:
            pip_download(flat, a.out, a.python, a.machine, None)

        # Read the requirements of every file pip would pick now; stop when nothing is new.
        files = chosen_files(flat, a.out, a.python, a.machine)
        new = False
        for path in files.values():
            if path in seen_files:
                continue
            seen_files.add(path)
            for req in wheel_requirements(path, env, set()):
                specs = wanted.setdefault(canonicalize_name(req.name), set())
                if str(req) not in specs:
                    specs.add(str(req))
                    new = True
        if not new:
            break
    else:
        print(f"dependencies did not settle in {MAX_ROUNDS} rounds", file=sys.stderr)
        return 1

    # Keep one file per project: the one pip picks; older downloads of a project go.
    keep = set(files.values()) | {
        Path(w) for w in a.requirements if w.endswith(".whl") and Path(w).parent == a.out
    }
    for path in a.out.glob("*.whl"):
        if path not in keep:
            name = canonicalize_name(parse_wheel_filename(path.name)[0])
            print(f"removing {path.name} (superseded for {name})")
            path.unlink()
    print(f"{len(keep)} wheels in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
