"""Errors of the autoscaler, grouped by what the caller should do.

::

    SurgecastError
    ├── ConfigError                  invalid configuration: report it, never crash-loop
    ├── MetricsError                 the metrics source could not answer
    │   ├── MetricsUnavailable       unreachable / failed: hold, never scale down
    │   └── MetricsStale             answered with old data: hold, never scale down
    └── ActuationError               the cluster refused or failed a write
        ├── ActuationConflict        409 / 429 / 5xx: retry after ``delay_s``
        ├── ActuationForbidden       403: permanent until RBAC is fixed (names verb+resource)
        └── TargetNotFound           404: the target is gone; report, do not crash
"""

from __future__ import annotations

__all__ = [
    "ActuationConflict",
    "ActuationError",
    "ActuationForbidden",
    "ConfigError",
    "MetricsError",
    "MetricsStale",
    "MetricsUnavailable",
    "SurgecastError",
    "TargetNotFound",
    "UnsupportedSelector",
]


class SurgecastError(Exception):
    """Base class of every error raised by :mod:`autoscaler`."""


class ConfigError(SurgecastError, ValueError):
    """The configuration is invalid; the message names the field and the expected value."""


class MetricsError(SurgecastError):
    """The metrics source could not give a usable answer."""


class MetricsUnavailable(MetricsError):
    """The source is unreachable or the query failed: hold, never scale down."""


class MetricsStale(MetricsError):
    """The newest sample is too old to act on: hold, never scale down."""


class ActuationError(SurgecastError):
    """A write to the cluster failed."""


class ActuationConflict(ActuationError):
    """A transient refusal (409 conflict, 429, 5xx): retry after ``delay_s`` seconds."""

    def __init__(self, message: str, *, delay_s: float = 1.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class ActuationForbidden(ActuationError):
    """403: the controller's RBAC lacks ``verb`` on ``resource``; permanent until fixed."""

    def __init__(self, message: str, *, verb: str = "", resource: str = "") -> None:
        super().__init__(message)
        self.verb = verb
        self.resource = resource


class TargetNotFound(ActuationError):
    """404: the target workload no longer exists."""


class UnsupportedSelector(TargetNotFound):
    """The target's ``spec.selector`` cannot be turned into a label selector (an empty one,
    an unknown operator, ``In`` without values): the pods cannot be found, so the target is
    reported like a missing one (a condition, ``InvalidSelector``; no crash) until its
    selector is fixed."""
