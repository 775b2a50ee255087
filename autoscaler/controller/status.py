"""``PredictiveAutoscaler`` status: conditions with honest transition times, and the
writer that patches the ``status`` subresource.

Conditions (``type``: meaning when ``True``):

- ``Ready``: the target exists, the controller can read it and its signals, and it
  decided this tick. ``False`` reasons: ``InvalidSpec``, ``TargetNotFound``,
  ``Forbidden``, ``MetricsUnavailable``, ``MetricsInvalid``, ``MetricsStale``,
  ``ApiConflict``.
- ``PredictionReady``: the forecast is fitted and used. ``False`` reasons:
  ``NotEnoughHistory``, ``ModelFailed``, ``WorseThanReactive`` (the prediction guard
  switched it off), ``Waiting`` (before the first fit).
- ``FallbackActive``: demand is missing or stale, so the policy holds (never scales
  down) or applies the configured KEDA-style fallback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

__all__ = ["GROUP", "PLURAL", "VERSION", "ConditionSet", "StatusWriter", "rfc3339"]

log = logging.getLogger(__name__)

GROUP = "surgecast.io"
VERSION = "v1alpha1"
PLURAL = "predictiveautoscalers"


def rfc3339(t: float) -> str:
    """Unix seconds as a Kubernetes ``Time`` string (seconds precision, ``Z``)."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Cond:
    status: str
    reason: str
    message: str
    since_s: float


class ConditionSet:
    """Conditions of one resource; ``lastTransitionTime`` moves only when the status does."""

    def __init__(self) -> None:
        self._c: dict[str, _Cond] = {}

    def set(self, type_: str, ok: bool | None, reason: str, message: str, now_s: float) -> bool:
        """Set a condition (``None`` = ``Unknown``); returns whether its status changed."""
        status = "Unknown" if ok is None else ("True" if ok else "False")
        cur = self._c.get(type_)
        changed = cur is None or cur.status != status
        since = now_s if changed or cur is None else cur.since_s
        self._c[type_] = _Cond(status, reason, message[:1024], since)
        return changed

    def status_of(self, type_: str) -> str | None:
        """``"True"``/``"False"``/``"Unknown"``, or ``None`` when never set."""
        c = self._c.get(type_)
        return None if c is None else c.status

    def reason_of(self, type_: str) -> str | None:
        """The condition's reason, or ``None`` when never set."""
        c = self._c.get(type_)
        return None if c is None else c.reason

    def to_wire(self) -> list[dict[str, str]]:
        """Conditions in the Kubernetes shape, sorted by type."""
        return [
            {"type": t, "status": c.status, "reason": c.reason, "message": c.message,
             "lastTransitionTime": rfc3339(c.since_s)}
            for t, c in sorted(self._c.items())
        ]


class StatusWriter:
    """Patches ``status`` of ``PredictiveAutoscaler`` resources (the status subresource).

    Failures are logged and returned, never raised: a status write must not stop scaling.
    """

    def __init__(self, api_client: Any) -> None:
        self.api = k8s.CustomObjectsApi(api_client)

    def write(self, namespace: str, name: str, status: dict[str, Any]) -> str | None:
        """Merge-patch ``status``; returns an error text or ``None`` on success."""
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        except ApiException as exc:
            msg = f"status of {namespace}/{name} not written ({exc.status}): {exc.reason}"
            log.warning("%s", msg)
            return msg
        except Exception as exc:  # urllib3 transport errors and the like
            msg = f"status of {namespace}/{name} not written: {type(exc).__name__}: {exc}"
            log.warning("%s", msg)
            return msg
        return None
