"""The serve load test (benchmarks/serve_load.py) in small: `kardia serve` as a subprocess against the FAKE
model, hostile requests of every kind mixed into a healthy stream. Checks correctness only (0 5xx, every
healthy answer right, every hostile request answered as it must be); the latency ratio is the benchmark's
job on an idle machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def serve_load():
    sys.path.insert(0, str(BENCH))  # by name, so the spawned fake-model process can import it too
    try:
        import serve_load

        yield serve_load
    finally:
        sys.path.remove(str(BENCH))


def test_hostile_requests_mixed_into_load(serve_load):
    res = serve_load.run(n=24, concurrency=4, hostile_fraction=0.05, hostile_concurrency=4, rounds=1,
                         cap_s=120, timeout_s=120, max_body_bytes=65536, max_context=4096, model_latency_s=0.01, warmup=2)
    a, b = res["a"], res["b"]
    assert a["five_xx"] == 0 and b["five_xx"] == 0, res["server_log_tail"]
    assert a["healthy_ok"] == a["healthy_sent"] == 24 and b["healthy_ok"] == b["healthy_sent"] == 24, b["problems"]
    assert a["hostile_sent"] == 0
    hostile = [o for o in b["outcomes"] if o.hostile]
    kinds = {r.kind for r in serve_load.hostile_kinds(65536)}
    assert {o.kind for o in hostile} == kinds  # every kind at least once
    assert not [(o.kind, o.status, o.problem, o.error) for o in hostile if o.problem is not None]
    valid = {"crisis message", "unicode line-break injection", "special-token injection"}
    for o in hostile:  # the checks above ran per kind; the statuses here say which way
        assert (o.status == 200) if o.kind in valid else (400 <= o.status < 500), (o.kind, o.status)
    assert {o.status for o in hostile if o.kind.startswith(("body over", "4 MiB"))} == {413}
    assert res["failures"] == [] or all("p99" in f for f in res["failures"]), res["failures"]


def test_every_kind_checks_what_it_must(serve_load):
    """The checks themselves: a wrong status, a non-OpenAI error shape or a leaked token is caught."""
    kinds = {r.kind: r for r in serve_load.hostile_kinds(65536)}
    err = {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}
    assert kinds["invalid JSON"].check(400, err) is None
    assert kinds["invalid JSON"].check(500, err) is not None
    assert kinds["invalid JSON"].check(400, {"detail": "x"}) is not None
    assert kinds["4 MiB body"].check(413, err) is not None  # code must be request_too_large
    leak = {"choices": [{"message": {"content": "hi <|eot_id|>"}}]}
    assert kinds["special-token injection"].check(200, leak) is not None
    poison = {"choices": [{"message": {"content": serve_load.POISON, "kardia": {"guarded": True, "safety": {"at_risk": True}}}}]}
    assert kinds["crisis message"].check(200, poison) is not None
    plan = serve_load.schedule(100, 0.05, 65536, seed=1)
    assert sum(r.hostile for r in plan) == len(kinds) and [r.index for r in plan if not r.hostile] == list(range(100))
