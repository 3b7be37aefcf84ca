"""The emulated-testbed fixture for these tests (other conftests can import it the same way)."""

from hiertrain_edge.emulate.testing import netns_testbed  # noqa: F401
