"""An emulated board-edge-cloud testbed: network namespaces, shaped links, CPU shares."""

from hiertrain_edge.emulate.netns import LinkShape, Testbed, cleanup_leftovers

__all__ = ["LinkShape", "Testbed", "cleanup_leftovers"]
