"""LeaderElector against the fake API server, through the official client over real HTTP.

Time is a fake clock the test advances; only the run()/stop() tests use real time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from fake_kube import FakeKube

from autoscaler.controller.leader import LeaderElector, default_identity
from autoscaler.errors import ConfigError

if TYPE_CHECKING:
    from conftest import FakeClock

NS = "surgecast"
LEASE = "surgecast-controller"
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)$")


def elector(kube: FakeKube, identity: str, clock: Callable[[], float],
            changes: list[bool] | None = None, **kw: Any) -> LeaderElector:
    # retries=False: no urllib3 retries (nor Retry-After sleeps) under the elector
    return LeaderElector(kube.api_client(retries=False), NS, LEASE, identity, clock=clock,
                         on_change=None if changes is None else changes.append, **kw)


def stored(kube: FakeKube) -> dict[str, Any]:
    """The Lease as the fake API server stores it (raw JSON)."""
    return kube.objects[("leases", NS, LEASE)]


def test_exactly_one_leader_and_it_renews(kube: FakeKube, clock: FakeClock) -> None:
    a_changes: list[bool] = []
    b_changes: list[bool] = []
    a = elector(kube, "a", clock, a_changes)
    b = elector(kube, "b", clock, b_changes)
    assert a.step() is True
    assert b.step() is False
    spec = stored(kube)["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    acquired = spec["acquireTime"]
    renew_times = [spec["renewTime"]]
    for _ in range(15):  # 30 s of 2-s retry periods: twice the lease duration
        clock.advance(2.0)
        assert a.step() is True
        assert b.step() is False
        assert a.is_leader and not b.is_leader
        spec = stored(kube)["spec"]
        renew_times.append(spec["renewTime"])
        assert spec["acquireTime"] == acquired  # kept across renewals
        assert spec["leaseTransitions"] == 0
    assert renew_times == sorted(set(renew_times))  # every renew moved renewTime forward
    assert a_changes == [True] and b_changes == []
    assert b.holder == "a" and a.holder == "a"
    assert not a.errors and not b.errors


def test_standby_takes_over_only_after_lease_duration(kube: FakeKube,
                                                      clock: FakeClock) -> None:
    a_changes: list[bool] = []
    b_changes: list[bool] = []
    a = elector(kube, "a", clock, a_changes)
    b = elector(kube, "b", clock, b_changes)
    a.step()
    b.step()  # b observes a's record now
    # a stops renewing (process frozen, partitioned); b keeps trying every second
    for t in range(1, 16):
        clock.advance(1.0)
        took = b.step()
        assert not (a.is_leader and b.is_leader)
        assert a.is_leader == (t < 10)  # a's renew deadline: 10 s after its last renew
        assert took == (t >= 15)  # b: 15 s (leaseDurationSeconds) without a change
    spec = stored(kube)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert b_changes == [True]
    # a wakes up: it sees b's fresh record, does not write and reports the loss
    assert a.step() is False
    assert a_changes == [True, False]
    assert stored(kube)["spec"]["holderIdentity"] == "b"


def test_expiry_uses_the_local_clock_not_the_remote_renew_time(kube: FakeKube,
                                                               clock: FakeClock) -> None:
    a = elector(kube, "a", clock)
    # b's clock runs an hour ahead: comparing renewTime with it would make a look expired
    b = elector(kube, "b", lambda: clock() + 3600.0)
    a.step()
    for _ in range(10):
        clock.advance(2.0)
        assert a.step() is True
        assert b.step() is False
    # a lagging clock does not keep b from taking over once a stops
    c = elector(kube, "c", lambda: clock() - 3600.0)
    c.step()
    clock.advance(14.0)
    assert b.step() is False and c.step() is False
    clock.advance(1.0)
    assert c.step() is True  # 15 s of its own clock without a change
    assert b.step() is False  # and b now sees c's fresh record


def test_release_hands_over_at_once(kube: FakeKube, clock: FakeClock) -> None:
    a_changes: list[bool] = []
    a = elector(kube, "a", clock, a_changes)
    b = elector(kube, "b", clock)
    a.step()
    b.step()
    a.release()
    assert not a.is_leader and a_changes == [True, False]
    spec = stored(kube)["spec"]
    assert not spec.get("holderIdentity")
    assert spec["leaseDurationSeconds"] == 1
    assert b.step() is True  # no wait: the lease has no holder
    spec = stored(kube)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 15
    # a non-holder's release writes nothing
    writes = len(kube.writes())
    a.release()
    assert len(kube.writes()) == writes
    # and back: b releases, a acquires (third transition)
    b.release()
    assert a.step() is True
    assert stored(kube)["spec"]["leaseTransitions"] == 2


class RacingClock:
    """A clock that runs ``hook`` once, on its next call, before answering.

    The elector reads the clock right after it has read the Lease, so the hook lands
    between its read and its write: exactly where a concurrent writer would.
    """

    def __init__(self, base: Callable[[], float]) -> None:
        self.base = base
        self.hook: Callable[[], object] | None = None

    def __call__(self) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return self.base()


def test_a_409_on_take_over_does_not_make_two_leaders(kube: FakeKube,
                                                       clock: FakeClock) -> None:
    a = elector(kube, "a", clock)
    b_clock = RacingClock(clock)
    b_changes: list[bool] = []
    b = elector(kube, "b", b_clock, b_changes)
    c = elector(kube, "c", clock)
    a.step()
    b.step()
    c.step()
    clock.advance(16.0)  # a is gone; b and c both see an expired lease
    b_clock.hook = c.step  # c writes between b's read and b's write
    assert b.step() is False
    assert c.is_leader and not b.is_leader
    assert b.errors["Conflict"] == 1 and b_changes == []
    spec = stored(kube)["spec"]
    assert spec["holderIdentity"] == "c" and spec["leaseTransitions"] == 1
    # next round b sees c's fresh record and stays a standby
    clock.advance(2.0)
    assert c.step() is True and b.step() is False


def test_a_409_on_create_does_not_make_two_leaders(kube: FakeKube, clock: FakeClock) -> None:
    b_clock = RacingClock(clock)
    b = elector(kube, "b", b_clock)
    c = elector(kube, "c", clock)
    b_clock.hook = c.step  # both find no Lease; c creates it first
    assert b.step() is False
    assert c.is_leader and not b.is_leader
    assert b.errors["Conflict"] == 1
    assert stored(kube)["spec"]["holderIdentity"] == "c"


def test_a_leader_that_meets_a_409_is_not_leader_that_round(kube: FakeKube,
                                                           clock: FakeClock) -> None:
    changes: list[bool] = []
    a = elector(kube, "a", clock, changes)
    a.step()
    clock.advance(2.0)
    kube.inject(409, verb="update", resource="leases")
    assert a.step() is False
    assert changes == [True, False]
    clock.advance(2.0)
    assert a.step() is True  # the Lease is still its own: renewed
    assert changes == [True, False, True]


@pytest.mark.parametrize(("code", "reason"), [(500, "ServerError"), (429, "TooManyRequests"),
                                              (403, "Forbidden")])
def test_api_errors_never_raise_and_leadership_lapses(kube: FakeKube, clock: FakeClock,
                                                      code: int, reason: str) -> None:
    changes: list[bool] = []
    a = elector(kube, "a", clock, changes)
    b = elector(kube, "b", clock)
    assert a.step() is True
    b.step()
    kube.inject(code, resource="leases", times=1000, retry_after_s=1 if code == 429 else None)
    seen = []
    for _ in range(7):
        clock.advance(2.0)
        seen.append(a.step())
    assert seen == [True, True, True, True, False, False, False]  # 2,4,6,8 s ok; 10 s not
    assert changes == [True, False]
    assert a.errors[reason] == 7
    assert a.last_error is not None and str(code) in a.last_error
    if code == 403:
        assert "leases.coordination.k8s.io" in a.last_error
    kube.faults.clear()
    # nobody took over in the meantime (b saw no change, but b also could not read): the
    # Lease still names a, so a renews and leads again
    clock.advance(2.0)
    assert a.step() is True and changes == [True, False, True]
    assert b.step() is False


def test_unreachable_api_server(clock: FakeClock) -> None:
    from kubernetes import client

    with FakeKube() as fk:
        cfg = client.Configuration()
        cfg.host = fk.host
        cfg.retries = False
    # the fake has shut down: nothing listens on its port any more
    a = LeaderElector(client.ApiClient(cfg), NS, LEASE, "a", clock=clock)
    assert a.step() is False
    assert a.errors["Unreachable"] == 1 and not a.is_leader
    a.release()  # nothing held: nothing to do, no raise


def test_microtime_fields_are_written_with_microseconds(kube: FakeKube,
                                                        clock: FakeClock) -> None:
    clock.now_s = 1_800_000_000.0  # a whole second: isoformat() alone would drop ".000000"
    a = elector(kube, "a", clock)
    a.step()
    spec = stored(kube)["spec"]
    assert MICRO.match(spec["acquireTime"]) and MICRO.match(spec["renewTime"])
    assert spec["renewTime"].startswith("2027-01-15T08:00:00.000000")
    clock.advance(2.5)
    a.step()
    spec = stored(kube)["spec"]
    assert MICRO.match(spec["acquireTime"]) and MICRO.match(spec["renewTime"])
    assert spec["renewTime"].startswith("2027-01-15T08:00:02.500000")
    assert spec["acquireTime"].startswith("2027-01-15T08:00:00.000000")


def test_run_and_stop_in_a_thread(kube: FakeKube) -> None:
    changes: list[bool] = []
    a = LeaderElector(kube.api_client(retries=False), NS, LEASE, "a", lease_duration_s=3.0,
                      renew_deadline_s=2.0, retry_period_s=0.05, on_change=changes.append)
    b = LeaderElector(kube.api_client(retries=False), NS, LEASE, "b", lease_duration_s=3.0,
                      renew_deadline_s=2.0, retry_period_s=0.05)
    thread = a.start()
    assert a.start() is thread  # idempotent
    deadline = time.monotonic() + 5.0
    while not a.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.is_leader
    b.start()
    time.sleep(0.3)
    assert a.is_leader and not b.is_leader  # several rounds: a keeps it
    t0 = time.monotonic()
    a.stop()
    assert time.monotonic() - t0 < 1.0 and not thread.is_alive()
    assert changes == [True, False] and not a.is_leader
    # b takes over at its next retry, not after the 3-s lease duration
    deadline = time.monotonic() + 1.5
    while not b.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.is_leader
    b.stop(release=False)
    assert stored(kube)["spec"]["holderIdentity"] == "b"  # kept: not released


def test_invalid_timings_are_config_errors(kube: FakeKube) -> None:
    api = kube.api_client()
    with pytest.raises(ConfigError, match="lease_duration_s"):
        LeaderElector(api, NS, lease_duration_s=10.0, renew_deadline_s=10.0)
    with pytest.raises(ConfigError, match="renew_deadline_s"):
        LeaderElector(api, NS, renew_deadline_s=2.0, retry_period_s=2.0)
    with pytest.raises(ConfigError, match="retry_period_s"):
        LeaderElector(api, NS, retry_period_s=0.0)
    with pytest.raises(ConfigError, match="namespace"):
        LeaderElector(api, "")


def test_default_identity(monkeypatch: pytest.MonkeyPatch, kube: FakeKube) -> None:
    monkeypatch.setenv("POD_NAME", "surgecast-controller-7d9f-abcde")
    a = LeaderElector(kube.api_client(), NS)
    b = LeaderElector(kube.api_client(), NS)
    assert a.identity.startswith("surgecast-controller-7d9f-abcde_")
    assert a.identity != b.identity
    assert a.name == "surgecast-controller"
    monkeypatch.delenv("POD_NAME")
    assert "_" in default_identity()


def test_a_raising_on_change_does_not_stop_election(kube: FakeKube, clock: FakeClock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def boom(leader: bool) -> None:
        raise RuntimeError(f"callback broke ({leader})")

    a = LeaderElector(kube.api_client(retries=False), NS, LEASE, "a", clock=clock,
                      on_change=boom)
    assert a.step() is True
    assert "callback broke (True)" in caplog.text
    clock.advance(2.0)
    assert a.step() is True
