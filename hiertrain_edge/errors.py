"""The package's exception hierarchy: one base, subclasses that also derive from built-ins."""

from __future__ import annotations


class HierTrainError(Exception):
    """Base of every error hiertrain-edge raises on purpose."""


class ConfigError(HierTrainError, ValueError):
    """A user-supplied value (flag, job file, profile, data) is not acceptable."""


class ScheduleError(ConfigError):
    """A schedule does not fit the model or the batch."""


class DataError(ConfigError):
    """A data set cannot be read or does not fit the model."""


class ModelError(ConfigError):
    """A model name or user model cannot be built or sliced."""


class ProtocolError(HierTrainError, ValueError):
    """A received message is malformed, of the wrong version, or out of place."""


class TransportError(HierTrainError, ConnectionError):
    """A peer did not answer in time or a socket failed."""


class PeerLostError(TransportError):
    """A peer fell silent for longer than the liveness bound."""
