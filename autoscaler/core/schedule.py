"""Scheduled replica bounds: cron-like windows evaluated at ``now_s`` in their time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from autoscaler.core.settings import ScheduleWindow

__all__ = ["bounds_at", "window_active"]


def window_active(w: ScheduleWindow, now_s: float) -> bool:
    """Whether ``now_s`` (Unix seconds) falls inside the window, in the window's time zone."""
    local = datetime.fromtimestamp(now_s, ZoneInfo(w.timezone))
    minute = local.hour * 60 + local.minute
    day = local.weekday()
    start, end = w.start_min, w.end_min
    if start <= end:
        return day in w.days and start <= minute < end
    # wraps past midnight: the part after midnight belongs to the previous day's window
    return (day in w.days and minute >= start) or ((day - 1) % 7 in w.days and minute < end)


def bounds_at(
    windows: tuple[ScheduleWindow, ...], now_s: float, min_replicas: int, max_replicas: int
) -> tuple[int, int, bool]:
    """``(min, max, scheduled)`` at ``now_s``: later active windows override earlier ones;
    ``scheduled`` says whether any window changed the base bounds. A window minimum above
    the base maximum raises the maximum with it (the schedule is the more specific rule)."""
    lo, hi, hit = min_replicas, max_replicas, False
    for w in windows:
        if not window_active(w, now_s):
            continue
        hit = True
        if w.min_replicas is not None:
            lo = w.min_replicas
        if w.max_replicas is not None:
            hi = w.max_replicas
    hi = max(hi, lo)
    return lo, hi, hit
