"""Shared fixtures: tier processes on loopback and small real data."""

from __future__ import annotations

import time

import pytest
from tierprocs import free_port, stop, tier_process

# The emulated board-edge-cloud testbed (network namespaces, tc-shaped links); needs root.
from hiertrain_edge.emulate.testing import netns_testbed  # noqa: F401


@pytest.fixture(scope="session")
def cloud_endpoint(tmp_path_factory):
    """One long-lived cloud process serving jobs one after another."""
    port = free_port()
    log = tmp_path_factory.mktemp("cloud") / "cloud.log"
    proc = tier_process("cloud", "--listen", f"tcp://127.0.0.1:{port}", "--threads", "1", log=log)
    time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="session")
def mnist():
    """The bundled MNIST test set (real data shipped with the package)."""
    from hiertrain_edge.datasets import load_dataset

    return load_dataset(None)
