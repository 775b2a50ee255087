"""The model registry: one file per model, one line here to register it.

``make(name, **kwargs)`` builds a model by name; ``REGISTRY`` lists what is available.
Models whose optional dependencies are missing (the ``neural`` extra) are absent from the
registry rather than failing at import.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec as _find_spec
from typing import Any

from forecasting.models.auto import AutoForecaster
from forecasting.models.ets import ETS
from forecasting.models.gbm import QuantileGBM
from forecasting.models.mstl import MSTLForecaster
from forecasting.models.nowcast import Nowcast
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.protocol import Forecaster

__all__ = ["REGISTRY", "make", "register"]

REGISTRY: dict[str, Callable[..., Forecaster]] = {
    "seasonal_naive": SeasonalNaive,
    "ets": ETS,
    "mstl": MSTLForecaster,
    "gbm": QuantileGBM,
    "auto": AutoForecaster,
    "nowcast": Nowcast,
}

# the neural extra: listed only when torch and transformers are installed (imported lazily)
if _find_spec("torch") is not None and _find_spec("transformers") is not None:
    from forecasting.models.patchtst import PatchTST

    REGISTRY["patchtst"] = PatchTST


def register(name: str, factory: Callable[..., Forecaster]) -> None:
    """Add a model factory under ``name`` (used by optional models and by plugins)."""
    REGISTRY[name] = factory


def make(name: str, **kwargs: Any) -> Forecaster:
    """Build the model registered as ``name``.

    Raises:
        KeyError: no such model; the message lists the available ones.
    """
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY))}"
        ) from None
    return factory(**kwargs)
