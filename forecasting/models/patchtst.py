"""A small PatchTST trained on the target's own history, on CPU, within a time budget.

The model is :class:`transformers.PatchTSTForPrediction` built from a
:class:`transformers.PatchTSTConfig` (random initialisation, never a hub download) with a
Student-t distribution head trained by negative log-likelihood, so every forecast step
comes with a full predictive distribution and the quantiles are read off it exactly
(``loc + scale * t_ppf(q, df)``): deterministic, monotone across levels, no sampling.

How the data reach the model:

1. **Coarse step.** Fine data (1-min, 5-min) are averaged into buckets with the same
   :mod:`forecasting.models._coarse` plan the statistical models use, here with a day
   spanning at most ``max_short_season`` = 48 coarse steps (30-min buckets for 1-min
   data), and the coarse quantiles are mapped back with the fine intraday profile and
   within-bucket noise.
2. **Scale.** ``log1p`` then standardised with the mean and standard deviation of the
   fit window (traffic is multiplicative and non-negative; ``expm1`` maps quantiles back,
   which a monotone transform does exactly). PatchTST's own per-window ``std`` scaler then
   removes the level of every context window.
3. **Windows.** Every ``context_length + prediction_length`` slice of the coarse history
   is a training example. The context covers the longest detected season that fits in
   ``max_context`` (a week of hourly data) and at least two short seasons; the prediction
   length is one short season (a day), so most horizons are one forward pass. Longer
   horizons roll forward by feeding the median back as context (their intervals are the
   per-block ones: optimistic beyond the first block).
4. **Calibration.** The last ``min(2 * prediction_length, n_windows / 5)`` windows are held
   out of training; on them the 90 % interval's misses set one factor that widens (or
   narrows) every quantile's distance from the median (split-conformal scaling).

Training stops at ``budget_s`` seconds of wall-clock (``time.perf_counter``) or after
``max_epochs`` epochs, whichever comes first, with ``torch.manual_seed(seed)`` in a forked
RNG state and ``torch.set_num_threads(threads)`` (restored afterwards). The result is
bit-for-bit reproducible for a seed **when the epoch cap stops training**; when the budget
stops it, the number of steps depends on machine speed (``stopped_by`` tells which).

``update`` appends observations and forecasts from the new context with the same weights;
only ``fit`` trains. torch and transformers are imported lazily, so this module imports
without the ``neural`` extra; the registry lists ``patchtst`` only when both are present.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from forecasting.errors import ForecastFailed, ForecastingError, InsufficientHistory
from forecasting.models._base import BaseForecaster
from forecasting.models._coarse import CoarsePlan, CoarseView, make_plan
from forecasting.series import FloatArray

if TYPE_CHECKING:
    import torch

__all__ = ["PatchTST", "TrainReport"]

T = TypeVar("T")

#: fewest coarse steps of context the model is ever given
MIN_CONTEXT = 32
#: fewest coarse steps the model predicts in one pass
MIN_PREDICTION = 8
#: most coarse steps predicted in one pass (longer horizons roll forward)
MAX_PREDICTION = 96
_DISTRIBUTIONS = ("student_t", "normal")


@dataclass(frozen=True)
class TrainReport:
    """What the last :meth:`PatchTST.fit` did.

    Attributes:
        epochs: whole passes over the training windows completed.
        steps: optimiser steps taken.
        seconds: wall-clock training time (``time.perf_counter``).
        stopped_by: ``"budget"``, ``"epochs"`` or ``"constant"`` (nothing to learn).
        final_loss: mean negative log-likelihood of the last epoch (scaled space).
        n_windows: training windows.
        widen: factor on the distance of every quantile from the median, from the
            held-out calibration windows (1 = the head's own intervals).
        context_length: coarse steps of context.
        prediction_length: coarse steps predicted per pass.
        factor: fine steps per coarse step.
    """

    epochs: int
    steps: int
    seconds: float
    stopped_by: str
    final_loss: float
    n_windows: int
    widen: float
    context_length: int
    prediction_length: int
    factor: int


class PatchTST(BaseForecaster):
    """PatchTST (transformers) with a Student-t head, trained per series on CPU.

    Args:
        context_length: coarse steps of context; ``None`` chooses from the seasons.
        prediction_length: coarse steps per forward pass; ``None`` = one short season
            (clamped to [8, 96]), 16 without a season.
        d_model: transformer width.
        num_layers: transformer encoder layers.
        num_heads: attention heads (must divide ``d_model``).
        ffn_dim: feed-forward width.
        budget_s: wall-clock training budget, seconds.
        max_epochs: most passes over the training windows.
        batch_size: windows per optimiser step.
        lr: AdamW learning rate.
        seed: seed of weight initialisation and window shuffling.
        threads: torch intra-op threads during fit and predict (restored afterwards).
        min_windows: fewest training windows ``fit`` accepts.
        max_context: longest automatic context, coarse steps.
        max_points: most recent coarse steps used for training.
        max_short_season: most coarse steps the shortest season may span (sets the factor).
        max_long_season: most coarse steps the longest season may span.
        distribution: ``"student_t"`` or ``"normal"`` predictive distribution.
    """

    name = "patchtst"
    #: left out of ``auto``'s default candidates: training takes 6-20 s per fit, and auto
    #: would pay it in every selection window (name it explicitly to include it)
    auto_candidate = False

    def __init__(
        self,
        *,
        context_length: int | None = None,
        prediction_length: int | None = None,
        d_model: int = 32,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 64,
        budget_s: float = 20.0,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 3e-3,
        seed: int = 0,
        threads: int = 1,
        min_windows: int = 32,
        max_context: int = 256,
        max_points: int = 4032,
        max_short_season: int = 48,
        max_long_season: int = 1008,
        distribution: str = "student_t",
    ) -> None:
        super().__init__()
        if context_length is not None and context_length < MIN_CONTEXT:
            raise ValueError(f"context_length must be at least {MIN_CONTEXT}, got {context_length}")
        if prediction_length is not None and prediction_length < 1:
            raise ValueError(f"prediction_length must be at least 1, got {prediction_length}")
        if not budget_s > 0:
            raise ValueError(f"budget_s must be positive, got {budget_s!r}")
        if max_epochs < 1 or batch_size < 1 or threads < 1 or min_windows < 1:
            raise ValueError(
                "max_epochs, batch_size, threads and min_windows must be at least 1, got "
                f"{max_epochs}, {batch_size}, {threads}, {min_windows}"
            )
        if d_model % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide d_model ({d_model})")
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
        if max_context < MIN_CONTEXT:
            raise ValueError(f"max_context must be at least {MIN_CONTEXT}, got {max_context}")
        self.context_arg = context_length
        self.prediction_arg = prediction_length
        self.d_model = d_model
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.budget_s = float(budget_s)
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.threads = threads
        self.min_windows = min_windows
        self.max_context = max_context
        self.max_points = max_points
        self.max_short_season = max_short_season
        self.max_long_season = max_long_season
        self.distribution = distribution
        self.plan = CoarsePlan(factor=1, seasons=(), fine_seasons=(), fine_step_s=1.0)
        self.report: TrainReport | None = None
        self._view: CoarseView | None = None
        self._net: Any = None  # transformers.PatchTSTForPrediction once fitted
        self._mean = 0.0
        self._std = 1.0
        self._constant: float | None = None
        self._widen = 1.0
        self._ctx = MIN_CONTEXT
        self._pred = MIN_PREDICTION

    # -------------------------------------------------------------- interface
    def min_history(self, step_s: float) -> int:
        """Context + one prediction block + ``min_windows - 1`` more windows, unaggregated.

        With enough data the model coarsens and uses a longer context; with just this much
        it trains at the native step on the shortest context.
        """
        ctx = self.context_arg or MIN_CONTEXT
        pred = self.prediction_arg or MIN_PREDICTION
        return ctx + pred + self.min_windows - 1

    # ------------------------------------------------------------------- fit
    def _fit(self) -> None:
        hist = self.history
        plan = make_plan(
            hist, None, max_short_season=self.max_short_season,
            max_long_season=self.max_long_season,
        )
        view = CoarseView(hist, plan, max_points=self.max_points)
        sizes = self._choose_sizes(len(view.coarse), plan.seasons)
        if sizes is None and plan.factor > 1:
            # too few whole buckets: train at the native step instead
            plan = CoarsePlan(1, plan.fine_seasons, plan.fine_seasons, hist.step_s)
            view = CoarseView(hist, plan, max_points=self.max_points)
            sizes = self._choose_sizes(len(view.coarse), plan.seasons)
        if sizes is None:
            need = self.min_history(hist.step_s)
            raise InsufficientHistory(
                f"{self.name} needs {need} observations ({self.min_windows} training windows) "
                f"at step {hist.step_s:g} s, got {len(view.coarse)} usable",
                needed=need, got=hist.n_observed,
            )
        self.plan, self._view = plan, view
        self._ctx, self._pred = sizes
        y = view.filled
        if not np.all(np.isfinite(y)) or float(np.min(y)) < 0:
            raise ForecastFailed(f"{self.name}: history has non-finite or negative values")
        z = np.log1p(y)
        self._mean = float(np.mean(z))
        self._std = float(np.std(z))
        if self._std <= 1e-9:
            # nothing to learn: the forecast is the constant level
            self._constant = float(np.mean(y))
            self._net = None
            self.report = TrainReport(0, 0, 0.0, "constant", 0.0, 0, 1.0, self._ctx, self._pred,
                                      plan.factor)
            return
        self._constant = None
        zs = (z - self._mean) / self._std
        self._net, self.report = _torch_call(self.name, "training", lambda: self._train(zs))

    def _choose_sizes(self, n: int, seasons: tuple[int, ...]) -> tuple[int, int] | None:
        """``(context, prediction)`` in coarse steps that leave ``min_windows`` windows."""
        if self.prediction_arg is not None:
            pred = self.prediction_arg
        elif seasons:
            pred = min(max(min(seasons), MIN_PREDICTION), MAX_PREDICTION)
        else:
            pred = 16
        if self.context_arg is not None:
            ctx = self.context_arg
        else:
            ctx = MIN_CONTEXT
            if seasons:
                longest = max(seasons)
                ctx = max(ctx, 2 * min(seasons), longest if longest <= self.max_context else 0)
            ctx = min(ctx, self.max_context)
        room = n - self.min_windows + 1  # steps left for context + prediction
        if ctx + pred > room:
            if self.prediction_arg is None:
                pred = max(MIN_PREDICTION, min(pred, room - ctx))
            if self.context_arg is None:
                ctx = max(MIN_CONTEXT, room - pred)
        if ctx + pred > room:
            return None
        return ctx, pred

    def _config(self) -> Any:
        from transformers import PatchTSTConfig

        patch = max(2, round(self._ctx / 14))
        return PatchTSTConfig(
            num_input_channels=1, context_length=self._ctx, prediction_length=self._pred,
            patch_length=patch, patch_stride=max(1, patch // 2), d_model=self.d_model,
            num_attention_heads=self.num_heads, num_hidden_layers=self.num_layers,
            ffn_dim=self.ffn_dim, loss="nll", distribution_output=self.distribution,
            scaling="std", norm_type="batchnorm", pooling_type=None,
            num_parallel_samples=1,
        )

    def _train(self, zs: FloatArray) -> tuple[Any, TrainReport]:
        import torch
        from transformers import PatchTSTForPrediction

        t0 = time.perf_counter()
        width = self._ctx + self._pred
        win = np.lib.stride_tricks.sliding_window_view(zs, width).astype(np.float32)
        n_cal = min(2 * self._pred, len(win) // 5)
        fit_win = win[: len(win) - n_cal] if n_cal else win
        x_all = torch.from_numpy(np.ascontiguousarray(fit_win[:, : self._ctx, None]))
        y_all = torch.from_numpy(np.ascontiguousarray(fit_win[:, self._ctx :, None]))
        n = x_all.shape[0]
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = PatchTSTForPrediction(self._config())
                gen = torch.Generator().manual_seed(self.seed)
                opt = torch.optim.AdamW(net.parameters(), lr=self.lr)
                net.train()
                epochs = steps = 0
                stopped_by = "epochs"
                last = math.nan
                while epochs < self.max_epochs:
                    perm = torch.randperm(n, generator=gen)
                    total = 0.0
                    for b in range(0, n, self.batch_size):
                        idx = perm[b : b + self.batch_size]
                        if len(idx) < 2:  # batch norm needs two examples
                            continue
                        opt.zero_grad()
                        loss = net(past_values=x_all[idx], future_values=y_all[idx]).loss
                        if not torch.isfinite(loss):
                            raise ForecastFailed(
                                f"{self.name}: training diverged (loss {float(loss)})"
                            )
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                        opt.step()
                        steps += 1
                        total += float(loss.detach()) * len(idx)
                        if time.perf_counter() - t0 >= self.budget_s:
                            stopped_by = "budget"
                            break
                    last = total / n
                    if stopped_by == "budget":
                        break
                    epochs += 1
                net.eval()  # type: ignore[no-untyped-call]
                self._net = net
                self._widen = 1.0
                if n_cal:
                    self._widen = self._calibrate(win[len(win) - n_cal :])
        finally:
            torch.set_num_threads(old_threads)
        report = TrainReport(
            epochs=epochs, steps=steps, seconds=time.perf_counter() - t0,
            stopped_by=stopped_by, final_loss=last, n_windows=n, widen=self._widen,
            context_length=self._ctx, prediction_length=self._pred, factor=self.plan.factor,
        )
        return net, report

    def _calibrate(self, cal: np.ndarray[Any, np.dtype[np.float32]]) -> float:
        """Widening factor from held-out windows (split-conformal on the 90 % interval).

        The score of a step is ``|y - median| / half-width of the central 90 % interval``;
        its 90 % quantile over the calibration windows is the factor that makes that
        interval cover 90 % of them. Clamped to [0.5, 5] so a few windows cannot wreck it.
        """
        q = self._distribution_quantiles(cal[:, : self._ctx], (0.05, 0.5, 0.95))
        truth = cal[:, self._ctx :].astype(np.float64)
        half = np.maximum((q[2] - q[0]) / 2.0, 1e-9)
        score = np.abs(truth - q[1]) / half
        return float(np.clip(np.quantile(score, 0.9), 0.5, 5.0))

    def _distribution_quantiles(
        self, ctx: np.ndarray[Any, np.dtype[Any]], quantiles: tuple[float, ...]
    ) -> FloatArray:
        """Quantiles of the head's distribution, ``(n_q, batch, prediction_length)``."""
        import torch
        from scipy import special

        x = torch.from_numpy(np.ascontiguousarray(ctx, dtype=np.float32)).reshape(
            len(ctx), self._ctx, 1
        )
        with torch.no_grad():
            out = self._net(past_values=x)
        params = [p.reshape(len(ctx), -1).double().numpy() for p in out.prediction_outputs]
        mloc = out.loc.reshape(-1, 1).double().numpy()
        mscale = out.scale.reshape(-1, 1).double().numpy()
        qs = np.asarray(quantiles, dtype=np.float64)[:, None, None]
        if self.distribution == "student_t":
            df, loc, scale = params
            std_q = special.stdtrit(df[None], qs)
        else:
            loc, scale = params
            std_q = special.ndtri(qs) * np.ones((1, *loc.shape))
        res: FloatArray = mloc[None] + mscale[None] * (loc[None] + scale[None] * std_q)
        return res

    # ---------------------------------------------------------------- update
    def _on_update(self, n_new: int) -> None:
        # same weights, new context: only the bucket view is rebuilt
        self._view = CoarseView(self.history, self.plan, max_points=self.max_points)

    # --------------------------------------------------------------- predict
    def _predict(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        view = self._view
        if view is None:  # pragma: no cover - set by _fit
            raise ForecastFailed(f"{self.name}: no fitted state")
        big_h = view.coarse_horizon(h)
        if self._constant is not None:
            q = np.full((len(quantiles), big_h), self._constant)
        else:
            y = view.filled
            if len(y) < self._ctx:
                raise ForecastFailed(f"{self.name}: fewer than {self._ctx} steps of context")
            zs = (np.log1p(np.maximum(y[-self._ctx :], 0.0)) - self._mean) / self._std
            qz = _torch_call(self.name, "prediction", lambda: self._predict_z(zs, big_h,
                                                                                quantiles))
            q = np.expm1(qz * self._std + self._mean)
        if q.shape != (len(quantiles), big_h) or not np.all(np.isfinite(q)):
            raise ForecastFailed(f"{self.name}: the model produced a non-finite forecast")
        q = np.maximum.accumulate(np.maximum(q, 0.0), axis=0)
        return view.to_fine(q, quantiles, h)

    def _predict_z(self, zs: FloatArray, big_h: int, quantiles: tuple[float, ...]) -> FloatArray:
        """Quantiles in the scaled space, ``(n_q, big_h)``, rolling forward by the median.

        Every level's distance from the median is multiplied by the calibration factor.
        """
        import torch

        levels = tuple(sorted(set(quantiles) | {0.5}))
        mid = levels.index(0.5)
        rows = [levels.index(q) for q in quantiles]
        ctx = np.asarray(zs, dtype=np.float64)
        blocks: list[FloatArray] = []
        done = 0
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            while done < big_h:
                q = self._distribution_quantiles(ctx[None, -self._ctx :], levels)[:, 0, :]
                median = q[mid]
                widened = median[None, :] + self._widen * (q - median[None, :])
                blocks.append(widened[rows])
                done += q.shape[1]
                ctx = np.concatenate([ctx, median])
        finally:
            torch.set_num_threads(old_threads)
        out_q: FloatArray = np.concatenate(blocks, axis=1)[:, :big_h]
        return out_q

    def _detail(self) -> str:
        r = self.report
        if r is None:
            return ""
        return (
            f"factor={r.factor} context={r.context_length} pred={r.prediction_length} "
            f"epochs={r.epochs} stopped_by={r.stopped_by} train_s={r.seconds:.1f}"
        )

    # ------------------------------------------------------------- for tests
    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the trained weights (empty for a constant series)."""
        if self._net is None:
            return {}
        return {k: v.detach().clone() for k, v in self._net.state_dict().items()}


def _torch_call(model: str, what: str, fn: Callable[[], T]) -> T:
    """Run a torch/transformers call; their failures become :class:`ForecastFailed`."""
    try:
        return fn()
    except ForecastingError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
        raise ForecastFailed(f"{model}: {what} failed: {type(exc).__name__}: {exc}") from exc
