"""Token-level admission: requests join a running batch between decode steps and leave it as
they finish. Engine level (``DecodeBatch`` on the tiny random Llama) and scheduler level (the
real ``Scheduler`` on an event loop, its decode thread and metrics), ordering asserted through
events and gates, never wall-clock thresholds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from model_worker.config import WorkerConfig
from model_worker.engine import EngineRequest, SamplingParams, TransformersEngine
from model_worker.metrics import WorkerMetrics
from model_worker.scheduler import Job, Prepared, Scheduler


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared, busy 2-core machine torch's default of two is several
    times slower for this tiny model (see docs/model-worker.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def eng(tiny_model_dir: Path) -> TransformersEngine:
    """The real engine with eos disabled, so every row decodes exactly ``max_tokens``."""
    e = TransformersEngine.load(tiny_model_dir, "tiny")
    e.eos_ids = frozenset()
    return e


@dataclass
class Out:
    """What one request emitted."""

    deltas: list[str] = field(default_factory=list)
    n: int = 0
    finish: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def emit(self, delta: str, n: int, finish: Any) -> None:
        assert self.finish is None, "emitted after finishing"
        self.deltas.append(delta)
        self.n, self.finish = n, finish


def request(
    eng: TransformersEngine, prompt: str, max_tokens: int, **kw: Any
) -> tuple[EngineRequest, Out]:
    out = Out()
    kw.setdefault("temperature", 0.0)
    params = SamplingParams(max_tokens, **kw)
    return EngineRequest(eng.encode_prompt(prompt), params, out.emit), out


def alone(eng: TransformersEngine, prompt: str, max_tokens: int, **kw: Any) -> Out:
    req, out = request(eng, prompt, max_tokens, **kw)
    eng.generate([req])
    assert out.finish is not None
    return out


def reference_greedy(eng: TransformersEngine, prompt: str, n: int) -> list[int]:
    """Greedy token ids from plain full forwards (no cache, no padding): the ground truth."""
    import torch

    ids = eng.encode_prompt(prompt)
    with torch.inference_mode():
        for _ in range(n):
            logits = eng.model(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(ids) - n :]


LONG = "The quick brown fox jumps over the lazy dog. Autoscaling keeps GPU workers ready"


def test_greedy_alone_matches_plain_forwards(eng: TransformersEngine) -> None:
    ref = reference_greedy(eng, "Hello world", 12)
    out = alone(eng, "Hello world", 12)
    assert out.n == 12 and out.finish == "length"
    assert out.text == eng.tokenizer.decode(ref, skip_special_tokens=True)


@pytest.mark.parametrize("joiner", ["GPU", LONG], ids=["shorter-prompt", "longer-prompt"])
def test_request_joining_mid_batch_decodes_as_alone(eng: TransformersEngine, joiner: str) -> None:
    first = "Warm pods are loaded and idle"
    solo = {p: alone(eng, p, 24).text for p in (first, joiner)}
    batch = eng.new_batch()
    ra, a = request(eng, first, 24)
    rb, b = request(eng, joiner, 24)
    assert batch.admit([ra]) == []
    for _ in range(5):
        assert batch.step() == []
    before = batch.width
    assert batch.admit([rb]) == []
    assert len(batch) == 2
    # the narrower side was left-padded: the width is the longer history
    assert batch.width == max(before, len(rb.prompt_ids))
    while len(batch):
        batch.step()
    assert a.text == solo[first] and a.n == 24
    assert b.text == solo[joiner] and b.n == 24
    assert batch.width == 0


def test_rows_leaving_the_batch_do_not_disturb_the_others(eng: TransformersEngine) -> None:
    prompts = {LONG: 3, "Hello": 30, "Warm pods": 12, "GPU workers": 20}
    solo = {p: alone(eng, p, n).text for p, n in prompts.items()}
    batch = eng.new_batch()
    reqs = {p: request(eng, p, n) for p, n in prompts.items()}
    assert batch.admit([r for r, _ in reqs.values()]) == []
    widths, left_order = [], []
    while len(batch):
        for req in batch.step():
            left_order.append(next(p for p, (r, _) in reqs.items() if r is req))
            widths.append(batch.width)
    assert left_order == [LONG, "Warm pods", "GPU workers", "Hello"]
    # the long prompt's row left first: its padding columns were cut from the cache
    hello_history = len(reqs["Hello"][0].prompt_ids) + 3 - 1
    assert widths[0] < len(reqs[LONG][0].prompt_ids) + 3 and widths[0] >= hello_history
    for p, (_, out) in reqs.items():
        assert out.text == solo[p] and out.n == prompts[p] and out.finish == "length", p


def test_eos_and_stop_strings_end_only_their_own_row(eng: TransformersEngine) -> None:
    ref = reference_greedy(eng, "Hello", 16)
    k = next(i for i in range(2, 16) if ref[i] not in ref[:i])
    eng.eos_ids = frozenset({ref[k]})  # "Hello" meets its eos after k tokens
    others = ("GPU workers", "Warm pods are")
    solo = {p: alone(eng, p, 16) for p in others}
    stop_text = solo["Warm pods are"].text
    stop = stop_text[4:7] if len(stop_text) >= 7 else None
    if stop is None or not stop.strip():
        pytest.skip("the random model's text is too short for a stop string")
    want_stop = alone(eng, "Warm pods are", 16, stop=(stop,))
    assert want_stop.finish == "stop" and stop not in want_stop.text

    batch = eng.new_batch()
    r_eos, o_eos = request(eng, "Hello", 16)
    r_gpu, o_gpu = request(eng, "GPU workers", 16)
    r_stop, o_stop = request(eng, "Warm pods are", 16, stop=(stop,))
    batch.admit([r_eos])
    batch.step()
    batch.admit([r_gpu, r_stop])
    while len(batch):
        batch.step()
    assert o_eos.finish == "stop" and o_eos.n == k
    assert o_eos.text == eng.tokenizer.decode(ref[:k], skip_special_tokens=True)
    assert (o_stop.text, o_stop.finish) == (want_stop.text, "stop")
    assert (o_gpu.text, o_gpu.n, o_gpu.finish) == (solo["GPU workers"].text, 16, "length")


def test_seeded_sampling_is_reproducible_when_joining(eng: TransformersEngine) -> None:
    kw: dict[str, Any] = {"temperature": 0.9, "top_p": 0.95, "seed": 1234}
    solo = alone(eng, "Warm pods are", 20, **kw)
    batch = eng.new_batch()
    r1, _ = request(eng, LONG, 40, temperature=1.0)  # an unseeded neighbour
    r2, o2 = request(eng, "Warm pods are", 20, **kw)
    batch.admit([r1])
    batch.step()
    batch.step()
    batch.admit([r2])
    while len(batch):
        batch.step()
    assert o2.text == solo.text and o2.n == 20


def test_max_tokens_one_and_cancellation_leave_at_once(eng: TransformersEngine) -> None:
    batch = eng.new_batch()
    r1, o1 = request(eng, "Hello", 1)
    r2, o2 = request(eng, "GPU", 50)
    assert batch.admit([r1, r2]) == [r1]  # finished at its first token, never in the cache
    assert (o1.n, o1.finish) == (1, "length") and len(batch) == 1
    batch.step()
    r2.cancelled.set()
    assert batch.step() == [r2]
    assert len(batch) == 0 and batch.width == 0 and o2.finish is None and o2.n == 2


def test_a_row_whose_sampling_breaks_fails_alone(eng: TransformersEngine) -> None:
    # softmax(logits / 1e-40) is NaN: torch.multinomial raises for that row
    broken, ob = request(eng, "Hello", 8, temperature=1e-40)
    ok, oo = request(eng, "GPU workers", 8)
    batch = eng.new_batch()
    left = batch.admit([broken, ok])
    assert left == [broken] and isinstance(broken.error, RuntimeError)
    assert ob.n == 0 and ob.finish is None and len(batch) == 1
    while len(batch):
        batch.step()
    assert ok.error is None and oo.text == alone(eng, "GPU workers", 8).text


def test_sliding_window_cache_admits_only_into_an_empty_batch(
    tiny_model_dir: Path, tiny_dims: dict[str, int]
) -> None:
    """A sliding-window model (Mistral): its cache layers cannot be merged, so a running
    batch refuses new rows (the scheduler then admits per batch); rows still leave."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=len(tok),
        **tiny_dims,
        sliding_window=8,
        pad_token_id=tok.pad_token_id,
    )
    eng = TransformersEngine(MistralForCausalLM(cfg).eval(), tok, "swa", 0.0)
    eng.eos_ids = frozenset()
    assert not eng.mergeable
    solo = alone(eng, "Hello", 20).text
    batch = eng.new_batch()
    r_short, _ = request(eng, LONG, 3)
    r_hello, hello = request(eng, "Hello", 20)
    assert batch.can_admit
    batch.admit([r_short, r_hello])
    assert not batch.can_admit
    with pytest.raises(RuntimeError, match="cannot merge"):
        batch.admit([request(eng, "GPU", 2)[0]])
    while len(batch):
        batch.step()
    assert hello.text == solo and batch.can_admit


# ---- the scheduler ------------------------------------------------------------------------


def gate_at(job: Job, n: int, reached: threading.Event, release: threading.Event) -> None:
    """Block the decode thread inside ``job``'s first emit at or past its ``n``-th token (a
    token whose text is not final yet emits nothing) until released."""
    emit = job.request.emit

    def gated(delta: str, k: int, finish: Any) -> None:
        emit(delta, k, finish)
        if k >= n and not reached.is_set():
            reached.set()
            assert release.wait(30), "the test never released the decode thread"

    job.request.emit = gated


def probe_at(job: Job, n: int, probe: Callable[[], Any], seen: list[Any]) -> None:
    """Record ``probe()`` from the decode thread at ``job``'s first emit at or past its
    ``n``-th token."""
    emit = job.request.emit

    def probing(delta: str, k: int, finish: Any) -> None:
        emit(delta, k, finish)
        if k >= n and not seen:
            seen.append(probe())

    job.request.emit = probing


async def finish(job: Job) -> tuple[str, int]:
    parts: list[str] = []
    while True:
        item = await asyncio.wait_for(job.out.get(), 60)
        assert not isinstance(item, BaseException), item
        parts.append(item[0])
        if item[2] is not None:
            return "".join(parts), item[1]


def prepared(eng: TransformersEngine, prompt: str, max_tokens: int, rid: str) -> Prepared:
    params = SamplingParams(max_tokens, temperature=0.0)
    return Prepared("completion", eng.encode_prompt(prompt), params, True, False, rid, 0)


def gauge(m: WorkerMetrics, name: str) -> float:
    value = m.registry.get_sample_value("surgecast_worker_" + name, {"model_name": m.model_name})
    assert value is not None, name
    return value


@pytest.mark.parametrize("admission", ["token", "batch"])
def test_request_arriving_mid_decode_gets_its_first_token_first(
    eng: TransformersEngine, tiny_model_dir: Path, admission: str
) -> None:
    cfg = WorkerConfig(
        model_path=tiny_model_dir,
        admission=admission,
        batch_wait_ms=0,
        decode_nice=0,
        torch_threads=1,
    )
    metrics = WorkerMetrics("tiny")
    short_alone = alone(eng, "GPU workers", 6).text

    async def scenario() -> dict[str, Any]:
        sched = Scheduler(eng, metrics, cfg)
        assert sched.admission == admission
        runner = asyncio.create_task(sched.run())
        long_job = sched.new_job(prepared(eng, LONG, 120, "long"))
        short_job = sched.new_job(prepared(eng, "GPU workers", 6, "short"))
        reached, release = threading.Event(), threading.Event()
        gate_at(long_job, 3, reached, release)
        running_seen: list[float] = []
        probe_at(short_job, 2, lambda: gauge(metrics, "num_requests_running"), running_seen)
        sched.submit(long_job)
        assert await asyncio.to_thread(reached.wait, 30)
        sched.submit(short_job)  # arrives while the long request decodes
        waiting_while_gated = gauge(metrics, "num_requests_waiting")
        release.set()
        short_text, short_n = await finish(short_job)
        _, long_n = await finish(long_job)
        while sched.running:
            await asyncio.sleep(0.01)
        runner.cancel()
        return {
            "short": short_job,
            "long": long_job,
            "short_text": short_text,
            "counts": (short_n, long_n),
            "waiting_while_gated": waiting_while_gated,
            "running_seen": running_seen,
        }

    r = asyncio.run(scenario())
    short, long = r["short"], r["long"]
    assert r["counts"] == (6, 120)
    assert r["short_text"] == short_alone  # joined a running batch, decoded as alone
    assert r["waiting_while_gated"] == 1.0
    assert gauge(metrics, "num_requests_waiting") == 0.0
    assert gauge(metrics, "num_requests_running") == 0.0
    assert gauge(metrics, "request_queue_time_seconds_count") == 2.0
    steps = gauge(metrics, "batch_size_count")
    if admission == "token":
        assert short.first_token_at < long.finished_at  # TTFT not behind the long request
        assert short.finished_at < long.finished_at
        assert r["running_seen"] == [2.0]  # decoded side by side with the long one
        # one observation per decode step; some steps decoded two rows
        assert steps >= 119 and gauge(metrics, "batch_size_sum") > steps
    else:
        assert short.first_token_at > long.finished_at  # waited for the whole batch
        assert r["running_seen"] == [1.0]
        assert steps == 2.0  # one observation per batch


async def two_running(
    sched: Scheduler, eng: TransformersEngine
) -> tuple[Job, Job, threading.Event]:
    """Start two long requests (a, b) and hold the decode loop at b's second token; returns
    them and the event that releases the loop."""
    a = sched.new_job(prepared(eng, LONG, 200, "a"))
    b = sched.new_job(prepared(eng, "Hello", 200, "b"))
    reached, release = threading.Event(), threading.Event()
    gate_at(b, 2, reached, release)
    sched.submit(a)
    sched.submit(b)
    assert await asyncio.to_thread(reached.wait, 30)
    return a, b, release


def test_max_batch_caps_the_running_batch_and_cancelled_rows_leave(
    eng: TransformersEngine, tiny_model_dir: Path
) -> None:
    cfg = WorkerConfig(
        model_path=tiny_model_dir, max_batch=2, batch_wait_ms=0, decode_nice=0, torch_threads=1
    )
    metrics = WorkerMetrics("tiny")

    async def scenario() -> dict[str, Any]:
        sched = Scheduler(eng, metrics, cfg)
        runner = asyncio.create_task(sched.run())
        a, b, release = await two_running(sched, eng)
        c = sched.new_job(prepared(eng, "GPU", 5, "c"))
        sched.submit(c)
        seen = {
            "running": gauge(metrics, "num_requests_running"),
            "waiting": gauge(metrics, "num_requests_waiting"),
        }
        a.request.cancelled.set()  # a's client went away: its row must leave at the next step
        release.set()
        _, c_n = await finish(c)  # c takes a's place
        b.request.cancelled.set()
        while sched.running or sched.pending:
            await asyncio.sleep(0.01)
        runner.cancel()
        seen["c_n"] = c_n
        return seen

    seen = asyncio.run(scenario())
    assert seen["running"] == 2.0 and seen["waiting"] == 1.0
    assert seen["c_n"] == 5
    assert gauge(metrics, "num_requests_running") == 0.0
    assert gauge(metrics, "num_requests_waiting") == 0.0


def test_an_engine_failure_fails_its_rows_and_the_loop_goes_on(
    eng: TransformersEngine, tiny_model_dir: Path
) -> None:
    cfg = WorkerConfig(model_path=tiny_model_dir, batch_wait_ms=0, decode_nice=0, torch_threads=1)
    real_forward = eng.forward
    calls = {"n": 0}

    def flaky_forward(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        return real_forward(*args)

    eng.forward = flaky_forward  # type: ignore[method-assign]

    async def scenario() -> tuple[BaseException, tuple[str, int]]:
        sched = Scheduler(eng, WorkerMetrics("tiny"), cfg)
        runner = asyncio.create_task(sched.run())
        job = sched.new_job(prepared(eng, "Hello", 10, "x"))
        sched.submit(job)
        err: BaseException | None = None
        while err is None:
            item = await asyncio.wait_for(job.out.get(), 30)
            if isinstance(item, BaseException):
                err = item
        ok = sched.new_job(prepared(eng, "GPU", 4, "y"))
        sched.submit(ok)
        result = await finish(ok)
        runner.cancel()
        return err, result

    err, (_, n) = asyncio.run(scenario())
    assert "device lost" in str(err) and n == 4


def test_a_backlog_is_admitted_once_enough_slots_are_free(
    eng: TransformersEngine, tiny_model_dir: Path
) -> None:
    cfg = WorkerConfig(
        model_path=tiny_model_dir, max_batch=2, batch_wait_ms=0, decode_nice=0, torch_threads=1
    )

    async def scenario() -> dict[str, Any]:
        sched = Scheduler(eng, WorkerMetrics("tiny"), cfg)
        sched.min_admit = 2  # with max_batch 16 it is 4; 2 keeps the test small
        runner = asyncio.create_task(sched.run())
        a, b, release = await two_running(sched, eng)
        c = sched.new_job(prepared(eng, "GPU", 5, "c"))
        d = sched.new_job(prepared(eng, "Warm pods", 5, "d"))
        sched.submit(c)
        sched.submit(d)
        a.request.cancelled.set()  # one slot frees, two wait: a backlog
        release.set()
        n = 0
        while n < 12:  # b decodes on alone for 10 more steps: c is not let in one by one
            item = await asyncio.wait_for(b.out.get(), 30)
            assert not isinstance(item, BaseException)
            n = item[1]
        seen = {"c_started_early": c.started_at is not None, "waiting": len(sched.pending)}
        b.request.cancelled.set()  # now both slots are free: c and d join together
        seen["counts"] = ((await finish(c))[1], (await finish(d))[1])
        seen["together"] = c.started_at is not None and c.started_at == d.started_at
        while sched.running:
            await asyncio.sleep(0.01)
        runner.cancel()
        return seen

    seen = asyncio.run(scenario())
    assert seen == {"c_started_early": False, "waiting": 2, "counts": (5, 5), "together": True}


def test_the_event_loop_is_woken_between_engine_calls_not_by_each_row(
    eng: TransformersEngine, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wake-up writes to the loop's self-pipe and hands the GIL to the loop; woken by a
    row's event, the loop ran while the step still had rows to emit, one hand-off per row (a
    quarter of the decode thread's time, docs/model-worker.md). Now no event wakes the loop
    while a step or an admit emits: the decode loop wakes it once after each. 8 rows x 12
    tokens, every token still arrives."""
    cfg = WorkerConfig(
        model_path=tiny_model_dir, max_batch=8, batch_wait_ms=0, decode_nice=0, torch_threads=1
    )
    batch_type = type(eng.new_batch())
    real_push = batch_type._push
    inside = threading.local()
    wakes = {"inside_push": 0, "outside": 0}

    def marked_push(self: Any, *a: Any) -> Any:
        inside.on = True
        try:
            return real_push(self, *a)
        finally:
            inside.on = False

    monkeypatch.setattr(batch_type, "_push", marked_push)

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        real_wake = loop.call_soon_threadsafe

        def counted(*a: Any, **kw: Any) -> Any:
            wakes["inside_push" if getattr(inside, "on", False) else "outside"] += 1
            return real_wake(*a, **kw)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
        sched = Scheduler(eng, WorkerMetrics("tiny"), cfg)
        runner = asyncio.create_task(sched.run())
        jobs = [sched.new_job(prepared(eng, f"Request {i}", 12, str(i))) for i in range(8)]
        for job in jobs:
            sched.submit(job)
        counts = [(await finish(job))[1] for job in jobs]
        runner.cancel()
        return counts

    assert asyncio.run(scenario()) == [12] * 8
    assert wakes["inside_push"] == 0 and wakes["outside"] >= 1, wakes


def test_unseeded_sampling_does_not_reseed_torch(
    eng: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.seed() also reseeds CUDA, formatting a stack trace on every call; an unseeded
    request draws its seed from ``secrets`` instead, and two such requests differ."""
    import torch

    def forbidden() -> int:
        raise AssertionError("torch.seed() called")

    monkeypatch.setattr(torch, "seed", forbidden)
    a = alone(eng, "Hello", 12, temperature=1.0)
    b = alone(eng, "Hello", 12, temperature=1.0)
    assert a.n == b.n == 12 and a.text != b.text


@pytest.mark.parametrize(
    ("configured", "device", "expected"),
    [(0, "cuda", 1), (0, "cuda:1", 1), (0, "cpu", 0), (4, "cuda", 4), (2, "cpu", 2)],
)
def test_decode_thread_uses_one_torch_thread_on_a_gpu_unless_set(
    configured: int, device: str, expected: int
) -> None:
    from model_worker.scheduler import decode_threads

    assert decode_threads(configured, device) == expected
