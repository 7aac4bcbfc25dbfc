"""Issue 10's GPU figures from one `bash bench/gpu_check.sh` run, beside the issue's targets, in one block.

    python bench/gpu_summary.py OUT_DIR     # the JSON files gpu_check.sh wrote to $OUT (its last part runs this)

A device session is short: this reads what the parts left (a part stopped by its time limit leaves a partial JSON
or none, and its lines say so) and prints what the issue asks, so nothing has to be dug out of the log:
- train samples/s at micro-batch 32 per side, its ratio to the HF Trainer baseline, the one-time cost
  (compile/capture) and projected_trial_seconds (targets: >= 5,400 samples/s; <= 60 s of training plus <= 60 s
  once), with how each loraclf side's step ran (metrics.json's step_execution, compile/capture seconds);
- evaluate/predict samples/s per side (target >= 20,000) and the inference sweep's best token budget;
- the step check's loss differences (compiled and captured vs eager; dropout) and its verdict;
- `tune` wall time and trials/hour per K;
- the decision rule for `model.compile: auto` on CUDA (the `("train", "cuda", "*")` entry of `loraclf.compiled.AUTO_EXECUTION`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TRAIN_TARGET = 5_400
INFER_TARGET = 20_000
ONE_TIME_TARGET = 60.0


def _load(out: Path, *names: str) -> dict | None:
    for name in names:
        path = out / name
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _f(v: object, spec: str = ",.0f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def speed_lines(report: dict) -> list[str]:
    lines = [f"speed ({report.get('env', {}).get('gpu', report.get('env', {}).get('device', '?'))}; "
             f"{'partial: a side did not finish' if 'derived' not in report else 'all sides finished'})"]
    derived = report.get("derived")
    sides = report.get("sides", {})
    if derived is None:  # a partial file: raw sides only
        for name, side in sides.items():
            tr = side.get("phases", {}).get("train", {})
            lines.append(f"  {name:20s} train {_f(tr.get('samples_per_s'))} samples/s (raw, steady)"
                         if "error" not in side else f"  {name:20s} FAILED: {side['error']}")
        return lines
    base = derived.get("baseline", {}).get("train", {}).get("samples_per_s")
    lines.append(f"  {'side':20s} {'train/s':>9s} {'x base':>7s} {'one-time s':>10s} {'trial s':>8s} {'eval/s':>9s} {'predict/s':>9s}  step")
    for name, d in derived.items():
        tr, ev, pr = d.get("train", {}), d.get("evaluate", {}), d.get("predict", {})
        rate = tr.get("samples_per_s")
        ratio = rate / base if isinstance(rate, (int, float)) and base else None
        settings = sides.get(name, {}).get("settings") or {}
        how = settings.get("step_execution", "")
        if settings.get("compile_first_call_seconds") is not None:
            how += f", compile {settings['compile_first_call_seconds']:.1f} s"
        if settings.get("cuda_graph_capture_seconds") is not None:
            how += f", {settings.get('cuda_graphs_captured')} graphs captured in {settings['cuda_graph_capture_seconds']:.2f} s"
        if settings.get("compile_fell_back") or settings.get("cuda_graph_capture_fell_back"):
            how += ", FELL BACK to eager"
        lines.append(f"  {name:20s} {_f(rate):>9s} {_f(ratio, '.2f'):>7s} {_f(tr.get('one_time_seconds'), '.1f'):>10s} "
                     f"{_f(tr.get('projected_trial_seconds'), '.0f'):>8s} {_f(ev.get('samples_per_s')):>9s} "
                     f"{_f(pr.get('samples_per_s')):>9s}  {how}")
    for name, d in derived.items():
        if name == "baseline":
            continue
        tr = d.get("train", {})
        rate, one_time = tr.get("samples_per_s"), tr.get("one_time_seconds")
        if isinstance(rate, (int, float)):
            training = 324_000 / rate
            lines.append(f"  {name}: train {'MEETS' if rate >= TRAIN_TARGET else 'misses'} >= {TRAIN_TARGET:,}/s; "
                         f"training of a trial {training:.0f} s ({'<=' if training <= 60 else '>'} 60); one-time "
                         f"{_f(one_time, '.1f')} s ({'<=' if isinstance(one_time, (int, float)) and one_time <= ONE_TIME_TARGET else '>'} 60)")
    trials = {k: d.get("train", {}).get("projected_trial_seconds") for k, d in derived.items()}
    graphs, compiled = trials.get("loraclf_cudagraphs"), trials.get("loraclf_compiled")
    ran = {k: (sides.get(k, {}).get("settings") or {}).get("step_execution") for k in ("loraclf_cudagraphs", "loraclf_compiled")}
    if graphs is not None and ran["loraclf_cudagraphs"] != "cudagraphs":
        lines.append(f"  model.compile auto on CUDA: no decision, the cudagraphs side ran {ran['loraclf_cudagraphs']}")
    elif isinstance(graphs, (int, float)) and isinstance(compiled, (int, float)):
        pick = "cudagraphs" if graphs < compiled else "compiled"
        lines.append(f"  model.compile auto on CUDA: projected trial cudagraphs {graphs:.0f} s vs compiled {compiled:.0f} s -> "
                     f"AUTO_EXECUTION[(\"train\", \"cuda\", \"*\")] = (\"{pick}\", 0)")
    elif isinstance(graphs, (int, float)):
        lines.append(f"  model.compile auto on CUDA: only cudagraphs finished ({graphs:.0f} s projected); the compiled side did "
                     "not: AUTO_EXECUTION[(\"train\", \"cuda\", \"*\")] = (\"cudagraphs\", 0) unless its compile is known to fit")
    return lines


def step_lines(step: dict) -> list[str]:
    sps = step.get("train_samples_per_s", {})
    lines = [f"step check ({step.get('device')}, {step.get('model')}, batch {step.get('batch')} x {step.get('width')}): "
             f"{'OK' if step.get('ok') else 'MISMATCH'}",
             f"  train samples/s eager {_f(sps.get('eager'))}, compiled {_f(sps.get('compiled'))}, captured {_f(sps.get('captured'))}; "
             f"loss diff vs eager: compiled {_f(step.get('max_loss_diff'), '.2e')}, captured {_f(step.get('max_captured_loss_diff'), '.2e')}"]
    rc = step.get("recipe_check") or {}
    if "cudagraphs_vs_eager" in rc:
        lines.append(f"  recipe: cudagraphs vs eager train loss {_f(rc['cudagraphs_vs_eager']['max_loss_diff'], '.2e')}; "
                     f"with LoRA dropout 0.1 {_f(rc['dropout_runs']['max_loss_diff'], '.2e')} (near 0: eager's dropout masks)")
    return lines


def sweep_lines(sweep: dict) -> list[str]:
    res = sweep.get("results", [])
    if not res:
        return ["inference sweep: no results"]
    best = max(res, key=lambda r: r["samples_per_s"])
    return [f"inference sweep ({sweep.get('device')}, {sweep.get('rows')} rows, mean {sweep.get('mean_tokens', 0):.1f} tokens): "
            + ", ".join(f"batch_size {r['batch_size']}: {r['samples_per_s']:,.0f}/s" for r in res),
            f"  best batch_size {best['batch_size']} ({best['samples_per_s']:,.0f}/s, "
            f"{'MEETS' if best['samples_per_s'] >= INFER_TARGET else 'misses'} >= {INFER_TARGET:,}); the default is 128"]


def tune_lines(tune: dict) -> list[str]:
    return ["tune (8 trials of the seed space unless the log says otherwise): " + "; ".join(
        f"K={r['workers']}: {r.get('finished')} finished in {_f(r.get('wall_seconds'), '.1f')} s, "
        f"{_f(r.get('trials_per_hour'))} trials/h, {_f(r.get('speedup'), '.2f')}x" for r in tune.get("runs", []))]


def summary(out: Path) -> list[str]:
    lines = ["=== issue 10 summary ==="]
    parts = [(("train_speed_cuda.json", "train_speed_cuda.partial.json"), speed_lines, "speed"),
             (("gpu_step_check.json",), step_lines, "step"),
             (("gpu_inference_sweep.json",), sweep_lines, "infer"),
             (("tune_workers_cuda.json",), tune_lines, "tune")]
    for names, fn, part in parts:
        report = _load(out, *names)
        lines += fn(report) if report is not None else [f"{part}: no JSON in {out} (not run, or stopped before writing)"]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python bench/gpu_summary.py OUT_DIR (the folder gpu_check.sh wrote its JSON to)", file=sys.stderr)
        return 2
    print("\n".join(summary(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
