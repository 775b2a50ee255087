"""Errors of the forecasting core, grouped by what the caller should do.

::

    ForecastingError                 base of everything raised here
    ├── SeriesError                  the input data is unusable: fix the data
    │   ├── NonMonotonicTimestamps
    │   ├── DuplicateTimestamps
    │   ├── InvalidValues            NaN / inf / negative where not allowed
    │   └── IrregularSteps           timestamps fall off the grid
    ├── InsufficientHistory          too little data for the model asked: use a simpler one
    ├── NotFitted                    predict/update before fit: a programming error
    └── ForecastFailed               the model failed on this data: fall back to a simpler one
"""

from __future__ import annotations


class ForecastingError(Exception):
    """Base class of every error raised by :mod:`forecasting`."""


class SeriesError(ForecastingError, ValueError):
    """The series given is unusable as it stands; the message says where and why."""


class NonMonotonicTimestamps(SeriesError):
    """Timestamps go backwards."""


class DuplicateTimestamps(SeriesError):
    """The same timestamp appears twice."""


class InvalidValues(SeriesError):
    """Values are NaN, infinite or negative where that is not allowed."""


class IrregularSteps(SeriesError):
    """Timestamps do not sit on a regular grid of the given step."""


class InsufficientHistory(ForecastingError, ValueError):
    """Too little history for the model asked for.

    Attributes:
        needed: observations the model needs.
        got: observations available.
    """

    def __init__(self, message: str, *, needed: int, got: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.got = got


class NotFitted(ForecastingError, RuntimeError):
    """``predict`` or ``update`` was called on a model that was never fitted."""


class ForecastFailed(ForecastingError, RuntimeError):
    """A model failed on this data (did not converge, timed out, numerical error).

    Callers fall back to a simpler model; :class:`forecasting.models.auto.AutoForecaster`
    does so on its own.
    """
