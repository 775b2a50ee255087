"""Pure helpers of :mod:`autoscaler.adapters.prometheus`: PromQL text and query results.

:func:`combined` joins the signals' queries into one, each series tagged with a
:data:`SIGNAL_LABEL` naming its signal, and :func:`by_signal` splits the answer again;
:func:`one_sample` reads one signal's value from an instant query's result and
:func:`drop_negative` makes impossible negative values missing. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Tells the signals apart in the combined query's answer (a valid, non-reserved name).
SIGNAL_LABEL = "surgecast_signal"


@dataclass
class Readings:
    """One tick's answers: values and errors by signal name."""

    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # the server refused the query
    not_vectors: list[str] = field(default_factory=list)  # scalar, string or range vector


def one_sample(result: Any) -> tuple[float, float]:
    """``(value, sample_time_s)`` of an instant query's result; ``LookupError`` if missing."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        sample = result  # scalar result: [ts, "v"]
    elif not result:
        raise LookupError("matched no series (missing data, not zero)")
    elif len(result) > 1:
        raise LookupError(
            f"returned {len(result)} series (e.g. {result[0].get('metric')}); "
            "aggregate it in PromQL (sum/avg)"
        )
    else:
        sample = result[0].get("value")
    try:
        t, v = float(sample[0]), float(sample[1])
    except (TypeError, ValueError, IndexError):
        raise LookupError(f"malformed sample {sample!r}") from None
    if not math.isfinite(v):
        raise LookupError(f"value is {v} (e.g. 0/0): missing")
    return v, t


def drop_negative(got: Readings, names: tuple[str, ...], queries: Mapping[str, str]) -> None:
    """Make a negative value of the ``names`` signals (rates, counts, ratios: never below 0)
    missing, with the reason in ``got.errors``, as NaN is: acting on it would scale down."""
    for name in names:
        v = got.values.get(name)
        if v is not None and v < 0:
            del got.values[name]
            got.errors[name] = (
                f"value is {v:g}, negative (impossible for this signal: a wrong query, e.g. "
                f"a difference or a counter without rate()): missing: {queries.get(name, '')}"
            )


def is_vector(result: Any) -> bool:
    """Whether ``result`` is an instant vector (a list of ``{"metric", "value"}``)."""
    return isinstance(result, list) and all(
        isinstance(r, dict) and "value" in r for r in result
    )


def combined(queries: Mapping[str, str]) -> str | None:
    """One PromQL answering all ``queries``, each series labelled with its signal's name.

    ``a or b`` keeps every series of ``a`` and those of ``b`` whose label sets (less
    ``__name__``) differ from all of ``a``'s; the distinct label makes them differ, so
    nothing is dropped. The newline ends a template's trailing ``# comment``. ``None`` (one
    query per signal) for fewer than two queries, or when a template's brackets or strings
    do not close (:func:`unclosed`): such a template is bad PromQL alone, but it could
    borrow the wrapper's parenthesis and parse, e.g. ``sum(a)) or (b``.
    """
    if len(queries) < 2 or unclosed(queries):
        return None
    return " or ".join(
        f'label_replace(({q}\n), "{SIGNAL_LABEL}", "{name}", "", "")'
        for name, q in queries.items()
    )


def unclosed(queries: Mapping[str, str]) -> list[str]:
    """The names of the ``queries`` whose brackets or strings do not close."""
    return [name for name, q in queries.items() if not closes(q)]


_OPENER = {")": "(", "]": "[", "}": "{"}


def closes(promql: str) -> bool:
    """Whether every bracket in ``promql`` is closed in order and every string ends."""
    stack: list[str] = []
    i = 0
    while i < len(promql):
        c = promql[i]
        if c in "\"'`":  # a string: backslash escapes, except in `raw` strings
            i += 1
            while i < len(promql) and promql[i] != c:
                i += 2 if c != "`" and promql[i] == "\\" else 1
            if i >= len(promql):
                return False
        elif c == "#":  # a comment, to the end of the line
            i = promql.find("\n", i)
            if i < 0:
                break
        elif c in "([{":
            stack.append(c)
        elif c in _OPENER:
            opened = stack.pop() if stack else None
            if opened != _OPENER[c]:
                return False
        i += 1
    return not stack


def by_signal(result: Any, names: Mapping[str, str]) -> dict[str, list[Any]] | None:
    """The combined answer's series by signal, label removed; ``None`` if it is not one."""
    if not isinstance(result, list):
        return None
    groups: dict[str, list[Any]] = {name: [] for name in names}
    for r in result:
        metric = r.get("metric") if isinstance(r, dict) else None
        if not isinstance(metric, dict) or metric.get(SIGNAL_LABEL) not in groups:
            return None
        rest = {k: v for k, v in metric.items() if k != SIGNAL_LABEL}
        groups[metric[SIGNAL_LABEL]].append({**r, "metric": rest})
    return groups
