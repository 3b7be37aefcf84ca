"""A profile taken with several torch threads on a busy host is flagged."""

from __future__ import annotations

from hiertrain_edge.profiling.measure import busy_host_warning


def test_one_thread_is_never_flagged() -> None:
    assert busy_host_warning(threads=1, load=7.0, cores=2) is None


def test_threads_with_idle_cores_are_not_flagged() -> None:
    assert busy_host_warning(threads=2, load=0.3, cores=2) is None
    assert busy_host_warning(threads=4, load=3.0, cores=8) is None


def test_threads_on_a_busy_host_are_flagged_with_the_numbers() -> None:
    warning = busy_host_warning(threads=2, load=1.3, cores=2)
    assert warning is not None
    assert "2 torch threads" in warning and "1.3 on 2 cores" in warning
    assert "--threads 1" in warning
