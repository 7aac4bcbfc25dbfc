"""`loraclf serve`: live servers on loopback, two adapters with different label sets over one base model,
bad requests, limits, auth, micro-batching, graceful shutdown, and a schema-driven fuzz test."""
from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import read_ag_rows, write_ag_csv
import loraclf.compiled
import loraclf.serve
from loraclf.cli import app as cli_app
from loraclf.errors import CheckpointError, ConfigError
from loraclf.model import load_base_model
from loraclf.inference import Classifier
from loraclf.serve import ServeSettings, create_app, is_loopback, parse_run_specs
from loraclf.serve.settings import RunSpec

from helpers import LORACLF, TINY_QUICK, free_port

TEXTS = [f"{r[1]} {r[2]}" for r in read_ag_rows("test.csv", 12, stride=41)]


# ---------------------------------------------------------------------------------------------
# Fixtures: two tiny runs over one base (4 AG classes; 2 string labels), servers in threads


@pytest.fixture(autouse=True)
def _eager_serving(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # Compiling every bucket at each in-process server's start-up would add minutes to this file; the compiled
    # server has its own tests (marked `compiled_serving`), and subprocess servers pass --compile false.
    if "compiled_serving" not in request.keywords:
        monkeypatch.delitem(loraclf.compiled.AUTO_EXECUTION, ("serve", "cpu", "bf16"))


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """news: 4-class AG News; sport: 'sports' vs 'world' from a CSV with string labels. Trained in parallel."""
    d = tmp_path_factory.mktemp("serve-runs")
    two = d / "two.csv"
    news = write_ag_csv(d / "news.csv", read_ag_rows("train.csv", 160, stride=25))
    rows = [r for r in read_ag_rows("train.csv", 3000, stride=3) if r[0] in ("1", "2")][:160]
    with open(two, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([f"{r[1]} {r[2]}", "world" if r[0] == "1" else "sports"] for r in rows)
    jobs = {
        "news": [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(news), "--epochs", "1", "--out", str(d / "news"), *TINY_QUICK],
        "sport": [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(two), "--epochs", "1", "--out", str(d / "sport"), *TINY_QUICK],
    }
    procs = {k: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k, cmd in jobs.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"{k}: {err}"
    return {k: d / k for k in jobs}


class LiveServer:
    """uvicorn serving `app` in a thread on a free 127.0.0.1 port (the socket is bound first: no race)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive(), "the server failed to start"
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()

    def post(self, body: Any = None, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + "/v1/classify", json=body, timeout=60, **kw) if body is not None else httpx.post(self.url + "/v1/classify", timeout=60, **kw)


class CountingLoader:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, model_cfg: Any, label_names: list[str]) -> Any:
        self.calls.append(model_cfg.name)
        return load_base_model(model_cfg, label_names)


LIMITS = dict(max_texts_per_request=8, max_text_chars=300, max_body_bytes=20_000)


@pytest.fixture(scope="module")
def live(runs: dict[str, Path]) -> Iterator[LiveServer]:
    """Both adapters on one server, small limits, a 20 ms batching window."""
    loader = CountingLoader()
    app = create_app([str(runs["news"]), str(runs["sport"])], ServeSettings(max_batch_wait_ms=20, **LIMITS), load_base=loader)
    with LiveServer(app) as srv:
        srv.loader = loader  # type: ignore[attr-defined]
        yield srv


def _classify(srv: LiveServer, adapter: str | None, texts: list[str], **kw: Any) -> httpx.Response:
    body: dict[str, Any] = {"texts": texts}
    if adapter is not None:
        body["adapter"] = adapter
    return srv.post(body, **kw)


# ---------------------------------------------------------------------------------------------
# Results and sharing


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["news", "sport"])
def test_classify_matches_the_classifier_for_each_adapter(live: LiveServer, runs: dict[str, Path], adapter: str) -> None:
    """It returns, per text, the label, id and probabilities that Classifier gives for that run, for both label sets."""
    r = _classify(live, adapter, TEXTS[:8])
    assert r.status_code == 200, r.text
    body = r.json()
    ref = Classifier.from_run_dir(runs[adapter], merge=False)  # as the server runs adapters that share a base
    probs = ref.predict_proba(TEXTS[:8])
    # fp32: the same numbers. bf16 (a CPU with AMX or AVX-512-BF16): the server's batches have other widths and
    # run compiled, and a bf16 rounding of a logit (2^-8 relative) moves a probability by up to ~1e-3.
    atol = 1e-5 if ref.precision == "fp32" else 1e-3
    assert body["adapter"] == adapter and len(body["predictions"]) == 8
    for pred, p in zip(body["predictions"], probs):
        assert list(pred["probabilities"]) == ref.label_names
        assert np.allclose([pred["probabilities"][n] for n in ref.label_names], p, atol=atol)
        assert pred["label"] == ref.label_names[pred["label_id"]]
        top2 = np.sort(p)[-2:]
        if top2[1] - top2[0] > 1e-4:  # a near-tie may flip on float noise between batch shapes
            assert pred["label_id"] == int(p.argmax())
        assert pred["truncated"] is False


@pytest.mark.slow
def test_adapters_share_one_base_model(live: LiveServer, runs: dict[str, Path]) -> None:
    """It loads the base once for two runs naming the same model, and both adapters use the same weights in memory."""
    assert len(live.loader.calls) == 1  # type: ignore[attr-defined]
    news, sport = live.app.state.adapters["news"], live.app.state.adapters["sport"]
    assert news.group is sport.group and news.classifier.run.model is sport.classifier.run.model
    emb_a = news.classifier.run.model.get_input_embeddings().weight
    emb_b = sport.classifier.run.model.get_input_embeddings().weight
    assert emb_a.data_ptr() == emb_b.data_ptr()
    assert sorted(news.group.model.peft_config) == sorted([news.key, sport.key])
    # Everything in memory: one base plus two small adapters and heads, far from two bases.
    run = news.classifier.run
    base_params = sum(p.numel() for p in load_base_model(run.config.model, run.label_names).parameters())
    served_params = sum(p.numel() for p in news.group.model.parameters())
    assert base_params < served_params < 1.5 * base_params
    listed = httpx.get(live.url + "/v1/adapters").json()["adapters"]
    assert [(a["name"], a["labels"]) for a in listed] == [("news", ["World", "Sports", "Business", "Sci/Tech"]), ("sport", ["sports", "world"])]
    assert {a["base_model"] for a in listed} == {yaml.safe_load((runs["news"] / "config.yaml").read_text())["model"]["name"]}


@pytest.mark.slow
def test_switching_adapters_back_and_forth_keeps_answers_stable(live: LiveServer) -> None:
    """It gives the same answer for an adapter before and after another adapter ran (set_adapter per batch)."""
    first = _classify(live, "news", TEXTS[:4]).json()
    assert _classify(live, "sport", TEXTS[:4]).status_code == 200
    assert _classify(live, "news", TEXTS[:4]).json() == first


@pytest.mark.slow
def test_health_reports_ready(live: LiveServer) -> None:
    """It answers /health with 200, status ok and the adapter count."""
    r = httpx.get(live.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["adapters"] == 2


def test_threads_sets_the_forward_pass_threads(runs: dict[str, Path]) -> None:
    """--threads N gives each forward pass N intra-op threads, set before any compile (dynamo guards on it)."""
    import torch

    before = torch.get_num_threads()
    try:
        with LiveServer(create_app([runs["news"]], ServeSettings(device="cpu", precision="fp32", threads=1))) as srv:
            assert httpx.post(srv.url + "/v1/classify", json={"texts": ["a b c"]}).status_code == 200
            assert srv.app.state.batcher._executor.submit(torch.get_num_threads).result() == 1  # the inference worker
    finally:
        torch.set_num_threads(before)


def test_workers_and_threads_auto() -> None:
    """0 means auto: two workers sharing the cores on a CPU (one on a one-core CPU), one worker with every core on
    a GPU; values given are kept."""
    from loraclf.serve.settings import resolve_workers

    def resolved(cores: int, on_gpu: bool, **kw: int) -> tuple[int, int]:
        s = resolve_workers(ServeSettings(**kw), cores, on_gpu)
        return s.workers, s.threads

    assert resolved(2, False) == (2, 1) and resolved(16, False) == (2, 8) and resolved(1, False) == (1, 1)
    assert resolved(8, True) == (1, 8)
    assert resolved(8, False, workers=1) == (1, 8) and resolved(8, False, workers=3, threads=2) == (3, 2)


@pytest.mark.parametrize("workers", [2, 1])
def test_workers_run_batches_side_by_side(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """--workers 2 runs two micro-batches of a merged adapter at once: each waits at a two-party barrier inside
    the forward pass, which only both together pass. With one worker the first batch waits alone and fails."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    from loraclf.serve import adapters as adapters_module

    barrier = threading.Barrier(2, timeout=5)
    real = adapters_module.Adapter.predict_proba

    def meet_then_predict(self: Any, texts: list[str]) -> Any:
        barrier.wait()
        return real(self, texts)

    monkeypatch.setattr(adapters_module.Adapter, "predict_proba", meet_then_predict)
    settings = ServeSettings(device="cpu", precision="fp32", workers=workers, threads=1, max_batch_texts=1, log_level="critical")
    before = torch.get_num_threads()
    try:
        with LiveServer(create_app([runs["news"]], settings)) as srv, ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(lambda t: httpx.post(srv.url + "/v1/classify", json={"texts": [t]}, timeout=60).status_code,
                                  ["stocks fall", "team wins"]))
    finally:
        torch.set_num_threads(before)
    assert codes == ([200, 200] if workers == 2 else [500, 500])


def test_loaded_objects_are_frozen_out_of_the_collector_while_serving(runs: dict[str, Path]) -> None:
    """It moves what start-up loaded out of the cycle collector's reach (a full collection over a compiled
    model's ~600,000 objects stalled requests for ~300 ms), and gives it back when the server stops."""
    import gc

    with LiveServer(create_app([runs["news"]], ServeSettings(device="cpu", precision="fp32"))) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0


@pytest.mark.slow
def test_long_texts_are_truncated_and_flagged(live: LiveServer) -> None:
    """It cuts texts over max_text_chars, says so per text, and scores them like the cut text."""
    long_text = TEXTS[0] * 20
    r = _classify(live, "news", [long_text, TEXTS[1]])
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["truncated"] for p in preds] == [True, False]
    cut = _classify(live, "news", [long_text[: LIMITS["max_text_chars"]]]).json()["predictions"][0]
    assert np.allclose(list(cut["probabilities"].values()), list(preds[0]["probabilities"].values()), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Bad requests: 4xx with a JSON error, and the server keeps serving


BAD_REQUESTS = {
    "malformed JSON": (dict(content=b'{"texts": ["a"', headers={"content-type": "application/json"}), 400, "malformed_json"),
    "body not an object": (dict(json=["a", "b"]), 422, "invalid_request"),
    "texts not a list": (dict(json={"adapter": "news", "texts": "hello"}), 422, "invalid_request"),
    "text not a string": (dict(json={"adapter": "news", "texts": ["ok", 3]}), 422, "invalid_request"),
    "adapter not a string": (dict(json={"adapter": 1, "texts": ["ok"]}), 422, "invalid_request"),
    "missing texts": (dict(json={"adapter": "news"}), 422, "invalid_request"),
    "empty list": (dict(json={"adapter": "news", "texts": []}), 422, "invalid_request"),
    "too many texts": (dict(json={"adapter": "news", "texts": ["a"] * 9}), 422, "invalid_request"),
    "unknown field": (dict(json={"adapter": "news", "texts": ["a"], "top_k": 2}), 422, "invalid_request"),
    "unknown adapter": (dict(json={"adapter": "nope", "texts": ["a"]}), 404, "unknown_adapter"),
    "adapter given as a path": (dict(json={"adapter": "../news", "texts": ["a"]}), 404, "unknown_adapter"),
    "no adapter with two loaded": (dict(json={"texts": ["a"]}), 422, "adapter_required"),
    "body over the size limit": (dict(json={"adapter": "news", "texts": ["x" * 25_000]}), 413, "payload_too_large"),
    "chunked body over the size limit": (dict(content=iter([b'{"texts": ["' + b"x" * 15_000, b"x" * 15_000 + b'"]}']),
                                          headers={"content-type": "application/json"}), 413, "payload_too_large"),
    "form-encoded body": (dict(data={"texts": "a"}), 422, "invalid_request"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_json_and_the_server_keeps_serving(live: LiveServer, case: str) -> None:
    """It answers each malformed, mistyped, unknown or oversize request with its 4xx and a JSON error, then serves on."""
    kwargs, status, code = BAD_REQUESTS[case]
    r = httpx.post(live.url + "/v1/classify", timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]
    assert _classify(live, "news", TEXTS[:2]).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("method, path, status", [("GET", "/v1/classify", 405), ("POST", "/v1/nothing", 404), ("GET", "/../etc/passwd", 404)])
def test_unknown_routes_and_methods_get_json_errors(live: LiveServer, method: str, path: str, status: int) -> None:
    """It answers unknown paths and wrong methods with a JSON error body."""
    r = httpx.request(method, live.url + path)
    assert r.status_code == status and set(r.json()) == {"error", "message"}


@pytest.mark.slow
def test_openapi_schema_states_the_limits_and_errors(live: LiveServer) -> None:
    """It serves an OpenAPI schema with this server's limits and every documented error response."""
    spec = httpx.get(live.url + "/openapi.json").json()
    req = spec["components"]["schemas"]["ClassifyRequest"]
    assert req["properties"]["texts"]["maxItems"] == LIMITS["max_texts_per_request"]
    assert req["properties"]["texts"]["minItems"] == 1
    assert req["additionalProperties"] is False
    responses = spec["paths"]["/v1/classify"]["post"]["responses"]
    assert {"200", "400", "404", "413", "422", "503"} <= set(responses)
    assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


# ---------------------------------------------------------------------------------------------
# Batching, back-pressure, auth


async def _burst(url: str, n: int, body: dict, headers: dict | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(client.post(url + "/v1/classify", json=body, headers=headers) for _ in range(n)))


@pytest.mark.slow
@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_are_gathered_into_batches(runs: dict[str, Path], batching: bool) -> None:
    """It serves 16 concurrent requests in fewer forward batches when batching is on, one each when off."""
    settings = ServeSettings(max_batch_wait_ms=200, batching=batching)
    with LiveServer(create_app([runs["news"]], settings)) as srv:
        responses = asyncio.run(_burst(srv.url, 16, {"texts": [TEXTS[0]]}))
        assert [r.status_code for r in responses] == [200] * 16
        assert len({json.dumps(r.json()) for r in responses}) == 1  # one adapter, one text: one answer
        runs_done = srv.app.state.batcher.batches_run
    assert runs_done < 8 if batching else runs_done == 16


@pytest.mark.slow
def test_full_queue_answers_503_with_retry_after(runs: dict[str, Path]) -> None:
    """It refuses requests beyond max_queue with 503 and Retry-After, and serves the queued ones."""
    settings = ServeSettings(max_queue=2, max_batch_wait_ms=500, max_batch_texts=64, retry_after_s=3)
    with LiveServer(create_app([runs["sport"]], settings)) as srv:
        responses = asyncio.run(_burst(srv.url, 8, {"texts": [TEXTS[0]]}))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "3" and busy.json()["error"] == "overloaded"
        assert srv.post({"texts": ["after the burst"]}).status_code == 200


@pytest.mark.slow
def test_bearer_token_is_required_when_configured(runs: dict[str, Path]) -> None:
    """It answers 401 without or with a wrong token, 200 with the right one, and leaves /health open."""
    settings = ServeSettings(auth_token="s3cret-token-123")
    with LiveServer(create_app([runs["sport"]], settings)) as srv:
        missing = srv.post({"texts": ["a"]})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert srv.post({"texts": ["a"]}, headers={"Authorization": "Bearer wrong-token-xyz"}).status_code == 401
        assert httpx.get(srv.url + "/v1/adapters").status_code == 401
        ok = srv.post({"texts": ["a"]}, headers={"Authorization": "Bearer s3cret-token-123"})
        assert ok.status_code == 200 and ok.json()["adapter"] == "sport"  # one adapter: no name needed
        assert httpx.get(srv.url + "/health").status_code == 200
        spec = httpx.get(srv.url + "/openapi.json", headers={"Authorization": "Bearer s3cret-token-123"}).json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]


def _unauthenticated_bodies() -> dict[str, tuple[dict[str, Any], int]]:
    """Bodies a request without the token may carry, and each one's status once the token is right (fresh
    each call: a chunked body is an iterator)."""
    return {
        "over the size limit": (dict(json={"texts": ["x" * 25_000]}), 413),
        "chunked, over the size limit": (dict(content=iter([b'{"texts": ["' + b"x" * 15_000, b"x" * 15_000 + b'"]}']),
                                              headers={"content-type": "application/json"}), 413),
        "malformed JSON": (dict(content=b'{"texts": ["a"', headers={"content-type": "application/json"}), 400),
        "invalid request": (dict(json={"adapter": 1, "texts": "hello", "top_k": 2}), 422),
        "form-encoded": (dict(data={"texts": "a"}), 422),
    }


@pytest.mark.slow
def test_token_is_checked_before_the_body_and_guards_the_schema_and_docs(runs: dict[str, Path]) -> None:
    """With a token, it answers 401 to any request without it, whatever the body (never 413/400/422), and keeps
    /openapi.json and /docs, which name the adapters, behind the token; /health stays open."""
    token = "s3cret-token-123"
    with LiveServer(create_app([runs["sport"]], ServeSettings(auth_token=token, max_body_bytes=20_000))) as srv:
        for auth in ({}, {"Authorization": "Bearer wrong-token-xyz"}, {"Authorization": f"Basic {token}"}):
            for case, (kwargs, _) in _unauthenticated_bodies().items():
                r = httpx.post(srv.url + "/v1/classify", timeout=60, **{**kwargs, "headers": {**kwargs.get("headers", {}), **auth}})
                assert r.status_code == 401, (case, auth, r.text)
                assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect", "/v1/nothing"):
            r = httpx.get(srv.url + path)
            assert r.status_code == 401 and "sport" not in r.text, path
        good = {"Authorization": f"Bearer {token}"}
        assert "sport" in httpx.get(srv.url + "/openapi.json", headers=good).json()["components"]["schemas"]["ClassifyRequest"]["properties"]["adapter"]["enum"]
        assert httpx.get(srv.url + "/docs", headers=good).status_code == 200
        # With the token, the same bodies get their usual answers.
        for case, (kwargs, status) in _unauthenticated_bodies().items():
            r = httpx.post(srv.url + "/v1/classify", timeout=60, **{**kwargs, "headers": {**kwargs.get("headers", {}), **good}})
            assert r.status_code == status, (case, r.text)
        assert httpx.get(srv.url + "/health").status_code == 200


@pytest.mark.slow
def test_reject_mode_refuses_long_texts(runs: dict[str, Path]) -> None:
    """It answers 422 for a text over max_text_chars when long_text is 'reject', and states the limit in the schema."""
    with LiveServer(create_app([runs["sport"]], ServeSettings(max_text_chars=50, long_text="reject"))) as srv:
        r = srv.post({"texts": ["x" * 51]})
        assert r.status_code == 422 and "50" in r.json()["message"]
        assert srv.post({"texts": ["x" * 50]}).status_code == 200
        texts = httpx.get(srv.url + "/openapi.json").json()["components"]["schemas"]["ClassifyRequest"]["properties"]["texts"]
        assert texts["items"]["maxLength"] == 50


# ---------------------------------------------------------------------------------------------
# Schema-driven fuzzing


@pytest.mark.slow
def test_fuzzing_the_openapi_schema_finds_no_server_errors(live: LiveServer) -> None:
    """It answers schema-generated valid and invalid requests without a 5xx and as its schema says."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings, strategies as st

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    strategy = st.one_of(schema.as_strategy(schemathesis.GenerationMode.POSITIVE), schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    statuses: list[int] = []

    # All of schemathesis' default checks: no 5xx, documented status codes and bodies, schema-valid requests
    # accepted and invalid ones rejected. Derandomized so that CI runs the same 80 cases every time.
    @settings(max_examples=80, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        statuses.append(case.call_and_validate(base_url=live.url, timeout=30).status_code)

    started = time.monotonic()
    fuzz()
    assert time.monotonic() - started < 60
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert _classify(live, "news", TEXTS[:1]).status_code == 200


# ---------------------------------------------------------------------------------------------
# The command line, start-up errors and graceful shutdown


def test_run_specs_take_directory_names_or_explicit_names(runs_free_tmp: Path) -> None:
    """It names adapters after their directories or NAME=, and refuses duplicate or invalid names and non-runs."""
    a, b = runs_free_tmp / "a", runs_free_tmp / "other" / "a"
    for d in (a, b):
        _fake_run(d)
    assert parse_run_specs([str(a), f"second={b}"]) == [RunSpec("a", a), RunSpec("second", b)]
    with pytest.raises(ConfigError, match="'a' is given twice"):
        parse_run_specs([str(a), str(b)])
    with pytest.raises(ConfigError, match="must be 1-64 letters"):
        parse_run_specs([("bad name", a)])
    with pytest.raises(CheckpointError, match="does not exist"):
        parse_run_specs([str(runs_free_tmp / "missing")])


def test_settings_list_every_problem_in_one_error() -> None:
    """It reports all invalid settings in one ConfigError line."""
    with pytest.raises(ConfigError) as e:
        ServeSettings(max_texts_per_request=0, long_text="drop", max_batch_wait_ms=-1, threads=-2)  # type: ignore[arg-type]
    assert "max_texts_per_request=0" in str(e.value) and "long_text='drop'" in str(e.value) and "max_batch_wait_ms=-1" in str(e.value)
    assert "threads=-2 (--threads)" in str(e.value)


def test_loopback_detection() -> None:
    """It treats 127.x, ::1 and localhost as loopback and anything else as exposed."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


@pytest.fixture()
def runs_free_tmp(tmp_path: Path) -> Path:
    return tmp_path


def _fake_run(d: Path) -> None:
    (d / "adapter").mkdir(parents=True)
    (d / "tokenizer").mkdir()
    (d / "adapter" / "adapter_config.json").write_text("{}")
    (d / "labels.json").write_text('{"label_names": ["a", "b"]}')
    (d / "config.yaml").write_text("name: x\n")


@pytest.mark.parametrize("args, needle", [
    (["/no/such/run"], "does not exist"),
    (["--max-texts-per-request", "0", "RUN"], "--max-texts-per-request"),
    (["--long-text", "drop", "RUN"], "long_text='drop'"),
    (["--log-level", "loud", "RUN"], "log_level='loud'"),
    (["--precision", "fp8", "RUN"], "--precision 'fp8'"),
    (["--auth-token-env", "LORACLF_TEST_UNSET_TOKEN", "RUN"], "LORACLF_TEST_UNSET_TOKEN"),
])
def test_cli_refuses_bad_arguments_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    """It prints one `error:` line naming the bad value and exits 2, before loading any model."""
    _fake_run(tmp_path / "run")
    args = [str(tmp_path / "run") if a == "RUN" else a for a in args]
    os.environ.pop("LORACLF_TEST_UNSET_TOKEN", None)
    r = CliRunner().invoke(cli_app, ["serve", *args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


@pytest.mark.parametrize("args, gpus, needle", [
    (["--device", "banana"], 0, "--device 'banana' is not a device"),
    (["--device", "cuda"], 0, "--device 'cuda': no CUDA GPU is available here"),
    (["--device", "cuda:1"], 1, "--device 'cuda:1': this machine has 1 CUDA GPU"),
    (["--device", "mps"], 0, "--device 'mps': loraclf runs on cpu or cuda"),
    (["--precision", "x"], 0, "--precision 'x' is not a precision"),
])
def test_cli_refuses_a_bad_device_or_precision_before_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                               gpus: int, needle: str) -> None:
    """It refuses an unknown device, a GPU the machine lacks, or an unknown precision with one `error:` line and status 2,
    before the app is built or a model loads (so never as "is the port in use?")."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)  # the same answer on a machine with GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    built: list[Any] = []
    monkeypatch.setattr(loraclf.serve.server, "create_app", lambda *a, **k: built.append(a))
    _fake_run(tmp_path / "run")
    r = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "run"), "--port", "0", *args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "port" not in lines[0] and built == []


def test_a_startup_failure_that_is_a_bug_is_not_blamed_on_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It re-raises an unexpected error from loading the models (a bug: it keeps its traceback), not "is the port in use?"."""
    def broken(*args: Any) -> Any:
        raise RuntimeError("PyTorch is not linked with support for this device")

    monkeypatch.setattr(loraclf.serve.api, "load_adapters", broken)
    _fake_run(tmp_path / "run")
    with pytest.raises(RuntimeError, match="not linked with support"):
        loraclf.serve.serve([tmp_path / "run"], ServeSettings(port=0, log_level="critical"))


def test_cli_has_an_option_for_every_setting() -> None:
    """It lists every ServeSettings field in `serve --help` as --field-name (--field-name-env for a secret) with its help and default."""
    r = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    # One entry per option: an option line and its wrapped continuation lines, joined.
    lines: list[str] = []
    for ln in r.output.splitlines():
        if ln.startswith("  -"):
            lines.append(ln.strip())
        elif lines and ln.startswith("      ") and ln.strip():
            lines[-1] += " " + ln.strip()
    lines = [" ".join(ln.split()) for ln in lines]
    assert all(len(ln) <= 80 for ln in r.output.splitlines()), "help wider than the terminal"
    for f in dataclasses.fields(ServeSettings):
        env = bool(f.metadata.get("env"))
        flag = "--" + f.name.replace("_", "-") + ("-env" if env else "")
        line = next((ln for ln in lines if ln.startswith(flag + " ")), None)
        assert line is not None, f"ServeSettings.{f.name} has no {flag} option in `serve --help`"
        # Wrapping may break a line at a hyphen: compare without whitespace.
        assert "".join(f.metadata["help"].split()) in "".join(line.split()), f"{flag}: the help is not ServeSettings.{f.name}'s"
        if isinstance(f.default, bool):
            assert f"--no-{f.name.replace('_', '-')}" in line
            assert f"[default:{'' if f.default else 'no-'}{flag[2:]}]" in "".join(line.split())
        elif f.default is not None and not env:
            assert f"[default:{f.default}]" in "".join(line.split()), f"{flag}: no default shown"


def test_cli_options_become_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It builds ServeSettings from the parsed options, the token read from the environment variable named."""
    _fake_run(tmp_path / "run")
    served: list[tuple[Any, ServeSettings]] = []
    monkeypatch.setattr(loraclf.serve, "serve", lambda run_dirs, settings: served.append((run_dirs, settings)))
    monkeypatch.setenv("LORACLF_TEST_TOKEN", "a-long-enough-token")
    r = CliRunner().invoke(cli_app, ["serve", f"x={tmp_path / 'run'}", "--max-queue", "7", "--no-batching", "--max-batch-wait-ms", "2.5",
                                     "--long-text", "reject", "--auth-token-env", "LORACLF_TEST_TOKEN", "--log-level", "warning", "--no-access-log"])
    assert r.exit_code == 0, r.output
    assert served == [([f"x={tmp_path / 'run'}"], ServeSettings(max_queue=7, batching=False, max_batch_wait_ms=2.5, long_text="reject",
                                                                auth_token="a-long-enough-token", log_level="warning", access_log=False))]


@pytest.mark.slow
def test_cli_reports_a_missing_base_model_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    """It exits 2 with one `error:` line (no traceback) when a run's base model cannot be loaded at start-up."""
    run = tmp_path / "moved"
    shutil.copytree(runs["sport"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name"] = str(tmp_path / "no-such-base-model")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([*LORACLF, "serve", str(run), "--port", "0", "--log-level", "warning"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no-such-base-model" in errors[0]


@pytest.mark.slow
def test_sigterm_lets_queued_requests_finish(runs: dict[str, Path]) -> None:
    """It finishes requests already queued when SIGTERM arrives, then shuts down cleanly (via the real `loraclf serve`)."""
    port = free_port()
    proc = subprocess.Popen([*LORACLF, "serve", f"{runs['news']}", "--port", str(port), "--max-batch-wait-ms", "800", "--no-access-log",
                             "--compile", "false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

        async def burst_then_term() -> list[httpx.Response]:
            task = asyncio.ensure_future(_burst(url, 4, {"texts": TEXTS[:2]}))
            await asyncio.sleep(0.3)  # requests are queued, waiting for the 800 ms batching window
            proc.send_signal(signal.SIGTERM)
            return await task

        responses = asyncio.run(burst_then_term())
        assert [r.status_code for r in responses] == [200] * 4
        # uvicorn re-raises the signal after its graceful shutdown, so a supervisor sees "terminated by SIGTERM".
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in proc.communicate()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ---------------------------------------------------------------------------------------------
# Backends per adapter: `DIR@onnx`, `DIR@onnx-int8`, `--backend onnx`, an ONNX export as a run spec


@pytest.fixture(scope="module")
def onnx_run(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the tiny run: the onnx adapter exports it into RUN/onnx (the shared run stays read-only)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = tmp_path_factory.mktemp("serve-onnx") / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval", "checkpoint.pt"))
    return run


@pytest.mark.slow
def test_torch_and_onnx_adapters_of_one_run_answer_alike(onnx_run: Path) -> None:
    """It serves one run as a torch and an onnx adapter: same labels, probabilities within 1e-4, the same response
    shape, and /v1/adapters names each backend; the ONNX cache it wrote is then accepted as a run spec itself."""
    app = create_app([f"pt={onnx_run}", f"ox={onnx_run}@onnx"], ServeSettings(device="cpu", precision="fp32", max_batch_wait_ms=0))
    with LiveServer(app) as srv:
        listed = {a["name"]: a for a in httpx.get(srv.url + "/v1/adapters", timeout=30).json()["adapters"]}
        answers = {name: _classify(srv, name, TEXTS) for name in ("pt", "ox")}
        assert app.state.adapters["ox"].group is None  # no base model for the onnx adapter
    assert {n: (a["backend"], a["precision"]) for n, a in listed.items()} == {"pt": ("torch", "fp32"), "ox": ("onnx", "fp32")}
    assert listed["pt"]["labels"] == listed["ox"]["labels"] and listed["pt"]["base_model"] == listed["ox"]["base_model"]
    pt, ox = (answers[n].json() for n in ("pt", "ox"))
    assert answers["pt"].status_code == answers["ox"].status_code == 200
    assert [p["label"] for p in pt["predictions"]] == [p["label"] for p in ox["predictions"]]
    for a, b in zip(pt["predictions"], ox["predictions"]):
        assert a.keys() == b.keys() and a["probabilities"].keys() == b["probabilities"].keys()
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-4)
    assert (onnx_run / "onnx" / "model.onnx").is_file()
    # The cache is an ONNX export: --backend onnx takes it as it is; torch refuses it and says how to serve it.
    assert parse_run_specs([onnx_run / "onnx"], backend="onnx") == [RunSpec("onnx", (onnx_run / "onnx").resolve(), "onnx")]
    with pytest.raises(CheckpointError, match="serve it as .*@onnx'"):
        parse_run_specs([str(onnx_run / "onnx")])


@pytest.mark.slow
def test_serve_wide_onnx_int8_default_and_a_torch_override(onnx_run: Path) -> None:
    """It gives run specs without a suffix --backend onnx --int8, and `@torch` keeps one adapter on PyTorch."""
    settings = ServeSettings(device="cpu", precision="fp32", backend="onnx", int8=True, max_batch_wait_ms=0)
    specs = parse_run_specs([f"q={onnx_run}", f"pt={onnx_run}@torch"], settings.backend, settings.int8)
    assert [(s.name, s.backend, s.int8) for s in specs] == [("q", "onnx", True), ("pt", "torch", False)]
    with LiveServer(create_app([f"q={onnx_run}", f"pt={onnx_run}@torch"], settings)) as srv:
        listed = {a["name"]: (a["backend"], a["precision"]) for a in httpx.get(srv.url + "/v1/adapters", timeout=30).json()["adapters"]}
        q, pt = (_classify(srv, name, TEXTS).json()["predictions"] for name in ("q", "pt"))
    assert listed == {"q": ("onnx", "int8"), "pt": ("torch", "fp32")}
    assert len(q) == len(pt) == len(TEXTS) and all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in q)


def test_run_specs_parse_backend_suffixes(runs_free_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It reads @torch, @onnx and @onnx-int8 after DIR or NAME=DIR, defaults to the serve-wide backend, and keeps a path with '@'."""
    monkeypatch.setattr("loraclf.onnx_backend.import_onnxruntime", lambda: None)  # the syntax, not the runtime
    a, at = runs_free_tmp / "a", runs_free_tmp / "b@onnx"
    for d in (a, at):
        _fake_run(d)
    specs = parse_run_specs([f"{a}@onnx", f"x={a}@onnx-int8", f"y={a}@torch", f"z={a}", f"b={at}"])
    assert [(s.name, s.path, s.backend, s.int8) for s in specs] == [
        ("a", a, "onnx", False), ("x", a, "onnx", True), ("y", a, "torch", False), ("z", a, "torch", False), ("b", at, "torch", False)]
    assert parse_run_specs([str(a)], backend="onnx", int8=True) == [RunSpec("a", a, "onnx", True)]
    with pytest.raises(ConfigError, match=r"unknown backend '@tensorrt'.*use @torch, @onnx, @onnx-int8"):
        parse_run_specs([f"{a}@tensorrt"])


def _fake_onnx_export(d: Path) -> None:
    """An ONNX export directory (export info and tokenizer) that lacks model.onnx."""
    (d / "tokenizer").mkdir(parents=True)
    (d / "tokenizer" / "tokenizer_config.json").write_text("{}")
    (d / "loraclf_export.json").write_text(json.dumps({"kind": "onnx", "label_names": ["a", "b"], "max_length": 8}))


@pytest.mark.parametrize("args, needle", [
    (["RUN@tensorrt"], "unknown backend '@tensorrt'"),
    (["--int8", "RUN"], "--int8 needs --backend onnx"),
    (["--backend", "tensorrt", "RUN"], "'tensorrt' is not a backend"),
    (["EXPORT@onnx"], "lacks model.onnx"),
    (["--backend", "onnx", "EXPORT"], "lacks model.onnx"),
    (["EXPORT"], "is an ONNX export, not a run; serve it as"),
    (["EMPTY@onnx"], "neither a loraclf run nor an ONNX export"),
])
def test_cli_refuses_bad_backends_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    """It refuses an unknown backend suffix, --int8 without onnx, and an onnx adapter without ONNX files with one `error:`
    line and status 2, before any model loads."""
    pytest.importorskip("onnxruntime")
    _fake_run(tmp_path / "run")
    _fake_onnx_export(tmp_path / "export")
    (tmp_path / "empty").mkdir()
    paths = {"RUN": tmp_path / "run", "EXPORT": tmp_path / "export", "EMPTY": tmp_path / "empty"}
    args = [str(paths[a.split("@")[0]]) + a[len(a.split("@")[0]):] if a.split("@")[0] in paths else a for a in args]
    r = CliRunner().invoke(cli_app, ["serve", "--port", "0", *args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr


@pytest.mark.slow
def test_cli_reports_an_onnx_adapter_that_cannot_be_exported_in_one_line(trained_tiny_run: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """It exits 2 with one `error:` line, before serving, when an onnx adapter's run cannot be exported."""
    pytest.importorskip("onnxruntime")
    from loraclf.errors import ModelError

    def failing_export(*args: Any, **kw: Any) -> Any:
        raise ModelError("the ONNX model's logits differ from PyTorch's by 0.5 (test)")

    monkeypatch.setattr("loraclf.onnx_export.write_onnx_export", failing_export)
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval", "checkpoint.pt"))
    r = CliRunner().invoke(cli_app, ["serve", f"{run}@onnx", "--port", "0", "--log-level", "critical"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "logits differ" in errors[0], r.stderr
    assert not (run / "onnx").exists()


# ---------------------------------------------------------------------------------------------
# Compiled serving on CPU: a base serving one adapter is merged, frozen and compiled (auto: in bf16)


@pytest.mark.compiled_serving
def test_a_lone_adapter_is_merged_compiled_at_start_up_and_answers_like_eager(runs: dict[str, Path]) -> None:
    """A run that has its base to itself is served merged and, with --compile true, compiled: the forward pass
    compiles before the first request, requests of 1 to 9 texts then compile nothing more, and the answers match
    the unmerged eager Classifier's. With --compile auto in fp32 it is merged and eager (a compiled fp32 server
    answered fewer requests/s on an AVX2-only CPU); two runs sharing a base stay unmerged and eager."""
    import torch._dynamo

    torch._dynamo.reset()
    settings = ServeSettings(device="cpu", precision="fp32", compile="true", max_batch_wait_ms=0)
    texts = [r[1] + " " + r[2] for r in read_ag_rows("test.csv", 9, stride=300)]
    texts[3] = texts[3] * 8  # one long text: a batch with it pads to max_length
    with LiveServer(create_app([runs["news"]], settings)) as srv:
        adapter = srv.app.state.adapters["news"]
        assert adapter.classifier.run.merged and adapter.classifier.compiled_for()
        assert not hasattr(adapter.group.model, "peft_config")  # a plain transformers model: LoRA merged in
        graphs = dict(torch._dynamo.utils.counters["stats"])
        assert graphs.get("unique_graphs", 0) >= 1
        answers = [srv.post({"texts": texts[:n]}).json()["predictions"] for n in (1, 3, 9)]
        assert dict(torch._dynamo.utils.counters["stats"]) == graphs  # no compile after start-up
        listed = httpx.get(srv.url + "/v1/adapters").json()["adapters"]
        assert [(a["merged"], a["compiled"]) for a in listed] == [(True, True)]
    eager = Classifier.from_run_dir(runs["news"], device="cpu", precision="fp32", merge=False)
    for n, got in zip((1, 3, 9), answers):
        want = eager.predict_proba(texts[:n])
        assert [p["label_id"] for p in got] == want.argmax(1).tolist()
        probs = np.array([[p["probabilities"][name] for name in eager.label_names] for p in got])
        np.testing.assert_allclose(probs, want, atol=1e-4)

    auto = ServeSettings(device="cpu", precision="fp32", max_batch_wait_ms=0)
    with LiveServer(create_app([runs["news"]], auto)) as srv:
        listed = httpx.get(srv.url + "/v1/adapters").json()["adapters"]
        assert [(a["merged"], a["compiled"]) for a in listed] == [(True, False)]
    shared = create_app([runs["news"], runs["sport"]], auto)
    with LiveServer(shared) as srv:
        adapters = srv.app.state.adapters
        assert not any(a.classifier.run.merged or a.classifier.compiled_for() for a in adapters.values())
        listed = httpx.get(srv.url + "/v1/adapters").json()["adapters"]
        assert [(a["merged"], a["compiled"]) for a in listed] == [(False, False), (False, False)]
