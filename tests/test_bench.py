"""bench/train_speed.py end to end with the tiny model: both sides run, and the JSON carries what the notes quote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, SHARED


def test_train_speed_smoke_reports_steady_state_and_projection(tiny_model: Path, tmp_path: Path) -> None:
    """It trains a warm-up epoch plus the steady steps on both sides, counts the same steady samples on each,
    and writes projected_trial_seconds, the one-time cost and accuracy per side."""
    out = tmp_path / "speed.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    # 96 rows = 3 micro-batches of 32 = 2 optimizer steps per epoch (accumulation 2, the last step short):
    # the warm-up epoch, then 2 steady steps = the second epoch exactly (96 samples).
    p = subprocess.run([sys.executable, str(REPO / "bench" / "train_speed.py"), "--model", str(tiny_model), "--rows", "96",
                        "--eval-rows", "32", "--steps", "2", "--compile", "off", "--skip-memory", "--device", "cpu",
                        "--data-dir", str(SHARED), "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    sides = ["baseline", "loraclf_eager"]
    assert list(report["sides"]) == sides
    assert report["plan"]["warmup_epoch_steps"] == 2 and report["plan"]["steady_steps"] == 2
    for side in sides:
        train = report["sides"][side]["phases"]["train"]
        assert train["optimizer_steps"] == 4, side
        assert train["warmup"]["warmup_samples"] == 96 and train["samples"] == 96, side
        derived = report["derived"][side]
        rate, one_time = derived["train"]["samples_per_s"], derived["train"]["one_time_seconds"]
        assert rate > 0 and one_time is not None
        assert report["projected_trial_seconds"][side] == derived["train"]["projected_trial_seconds"]
        assert abs(report["projected_trial_seconds"][side] - (3 * 108_000 / rate + max(0.0, one_time))) < 1e-6
        for phase in ("evaluate", "predict"):
            assert 0.0 <= derived[phase]["accuracy"] <= 1.0
        # the matmul peak of the dtype the side ran in was measured, so its share of peak is a number
        assert report["sides"][side]["dtype"] in report["matmul_peak"]
        assert derived["train"]["useful_share_of_peak"] is not None
        assert f"warm-up {side}: first epoch" in p.stdout
    assert report["sides"]["loraclf_eager"]["settings"]["model.compile"] in (False, "false")
    assert set(report["ratios"]) == {"loraclf_eager"}


def test_cpu_inference_times_an_earlier_checkout_beside_the_current_one(trained_tiny_run: Path, ag_small: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """--before-src runs another checkout's predict path in a worker process, timed round by round with the
    in-process backends; here the 'earlier' checkout is this one, so both score the same rows alike."""
    out = tmp_path / "inference.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, str(REPO / "bench" / "cpu_inference.py"), "--run-dir", str(trained_tiny_run),
                        "--data", str(ag_small["test"]), "--rows", "40", "--backends", "torch-fp32", "--whole-set", "2",
                        "--before-src", str(REPO), "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert isinstance(report["environment"]["cpu"]["isa_caps"], dict)  # a run under ONEDNN_MAX_CPU_ISA etc. says so
    whole = report["whole_set"]
    before = [k for k in whole if k.startswith("before-")]
    assert len(before) == 1 and list(whole)[1:] == ["torch-fp32"], whole
    assert whole[before[0]]["src"] == str(REPO)
    for row in whole.values():
        assert len(row["rounds"]) == 2 and row["samples_per_s"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
    p = subprocess.run([sys.executable, str(REPO / "bench" / "cpu_inference.py"), "--run-dir", str(trained_tiny_run),
                        "--before-src", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "not a loraclf checkout" in p.stderr


def test_gpu_inference_sweep_dry_run_on_cpu(tiny_model: Path, tmp_path: Path) -> None:
    """bench/gpu_inference_sweep.py (a part of bench/gpu_check.sh) runs on CPU with a tiny model and reports a
    rate per token budget, so the GPU session that runs it does not meet a broken script."""
    out = tmp_path / "sweep.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_inference_sweep.py"), "--tokenizer", str(tiny_model),
                        "--device", "cpu", "--model", "random-tiny", "--rows", "60", "--batch-sizes", "4,16", "--reps", "1",
                        "--data-dir", str(SHARED), "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["rows"] == 60 and [r["token_budget"] for r in report["results"]] == [4 * 128, 16 * 128]
    assert all(r["samples_per_s"] > 0 for r in report["results"])


def test_loraclf_side_records_the_shapes_the_step_runs(monkeypatch) -> None:  # noqa: ANN001
    """train_speed's flop and padding columns count what the step fed: eager pads each micro-batch to a multiple
    of 8; a captured or compiled CUDA step runs batch_size rows (fillers too) at its length bucket's width."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import loraclf_side

    ids, batches = [[5] * 10, [5] * 50, [5] * 3], [[0, 1], [2]]
    assert loraclf_side._train_passes(ids, batches, 0, "eager", 128, "cpu", 32) == [(2, 56, [0, 1]), (1, 8, [2])]
    assert loraclf_side._train_passes(ids, batches, 0, "cudagraphs", 128, "cuda", 32) == [(32, 64, [0, 1]), (32, 32, [2])]
    records = loraclf_side._records(ids, [(32, 64, [0, 1])])
    assert records == [{"n": 32, "padded_len": 64, "real_tokens": 60, "real_sq": 2600}]


def test_gpu_summary_reads_the_parts_and_decides_auto(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """bench/gpu_summary.py puts the speed figures beside issue 10's targets and names what model.compile=auto
    should train with on CUDA, from the side with the shorter projected trial (and only when each side ran the
    way it names); a part that left no JSON gets one line."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import gpu_summary

    def side(rate: float, one_time: float, **settings) -> tuple[dict, dict]:
        train = {"samples_per_s": rate, "one_time_seconds": one_time, "projected_trial_seconds": 324_000 / rate + one_time}
        return ({"train": train, "evaluate": {"samples_per_s": 25_000.0}, "predict": {"samples_per_s": 21_000.0}},
                {"settings": settings})
    derived, sides = {}, {}
    for name, (d, s) in {"baseline": side(450.0, 1.0), "loraclf_cudagraphs": side(5_500.0, 2.0, step_execution="cudagraphs"),
                         "loraclf_compiled": side(6_300.0, 95.0, step_execution="compiled")}.items():
        derived[name], sides[name] = d, s
    (tmp_path / "train_speed_cuda.json").write_text(json.dumps({"env": {"gpu": "H100"}, "derived": derived, "sides": sides}))
    text = "\n".join(gpu_summary.summary(tmp_path))
    assert "loraclf_cudagraphs: train MEETS >= 5,400/s; training of a trial 59 s (<= 60); one-time 2.0 s (<= 60)" in text
    assert 'AUTO_EXECUTION[("train", "cuda", "*")] = ("cudagraphs", 0)' in text  # 61 s against 146 s projected
    assert "step: no JSON" in text and "tune: no JSON" in text
    sides["loraclf_cudagraphs"]["settings"]["step_execution"] = "eager"  # e.g. a CPU dry run
    (tmp_path / "train_speed_cuda.json").write_text(json.dumps({"env": {}, "derived": derived, "sides": sides}))
    assert "no decision, the cudagraphs side ran eager" in "\n".join(gpu_summary.summary(tmp_path))
