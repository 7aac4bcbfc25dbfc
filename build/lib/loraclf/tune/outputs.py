"""What a study writes into its directory: experiment_log.csv, best.json, best.yaml, plots, and one line per trial.

Every file is replaced atomically, so a reader (or another worker sharing the directory) never
sees half of one; each worker rewrites them from the storage after every trial.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

from ..config import Config
from ..io import atomic_write, write_json
from .space import best_config
from .storage import masked
from .study import state_counts

LOG_CSV = "experiment_log.csv"
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def trial_line(t: Any) -> str:
    """One line about a finished trial."""
    state = t.state.name.lower()
    acc = t.user_attrs.get("val_accuracy")
    parts = [f"trial {t.number} {state}"]
    if acc is not None:
        parts.append(f"val_accuracy={acc:.4f}")
    if "pruned_step" in t.user_attrs:
        parts.append(f"at step {t.user_attrs['pruned_step']}")
    if t.duration is not None:
        parts.append(f"({t.duration.total_seconds():.1f}s)")
    if "error" in t.user_attrs:
        parts.append(f"error: {t.user_attrs['error']}")
    parts.append(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()))
    return " ".join(parts)


def trial_rows(study: Any, keys: list[str]) -> list[dict[str, Any]]:
    """One row per trial of the study (surplus trials left out), by number."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        ua = t.user_attrs
        if ua.get("surplus"):
            continue
        history = t.system_attrs.get("retry_history", [])
        row = {"number": t.number, "state": t.state.name.lower()}
        row.update({f"param.{k}": t.params.get(k, "") for k in keys})
        row.update(
            val_accuracy=t.value if t.value is not None else ua.get("val_accuracy", ""),
            val_loss=ua.get("val_loss", ""),
            epochs_run=ua.get("epochs_run", ""),
            steps_run=ua.get("steps_run", ""),
            pruned_step=ua.get("pruned_step", ""),
            duration_s=round(t.duration.total_seconds(), 2) if t.duration is not None else "",
            run_dir=ua.get("run_dir", ""),
            worker=ua.get("worker", ""),
            retry_of=history[-1] if history else "",
            error=ua.get("error", ""),
        )
        rows.append(row)
    return rows


def write_experiment_log(study_dir: Path, study: Any, keys: list[str]) -> Path:
    """experiment_log.csv, replaced atomically (readers never see half a file)."""
    rows = trial_rows(study, keys)
    path = study_dir / LOG_CSV
    fields = list(rows[0]) if rows else ["number", "state"]
    with atomic_write(path, encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def write_best(study_dir: Path, study: Any, cfg: Config, url: str, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """best.json and best.yaml for the best complete trial (None while no trial has completed)."""
    import yaml

    try:
        best = study.best_trial
    except ValueError:
        return None
    info = {
        "study_name": study.study_name,
        "storage": masked(url),
        "number": best.number,
        "val_accuracy": best.value,
        "val_loss": best.user_attrs.get("val_loss"),
        "params": best.params,
        "run_dir": best.user_attrs.get("run_dir"),
        "trials": state_counts(study.get_trials(deepcopy=False)),
        **(extra or {}),
    }
    write_json(study_dir / "best.json", info)
    bcfg = best_config(cfg, best.params)
    with atomic_write(study_dir / "best.yaml") as f:
        f.write(f"# Best trial {best.number} of study '{study.study_name}': val_accuracy {best.value:.4f}.\n"
                f"#   loraclf train --config {study_dir / 'best.yaml'}\n")
        yaml.safe_dump(bcfg.to_dict(), f, sort_keys=False)
    return info


def write_plots(study_dir: Path, study: Any) -> dict[str, str]:
    """PNG plots (and HTML ones when plotly is installed); a plot the study cannot make yet is skipped."""
    import importlib.util

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as ov
    from optuna.visualization import matplotlib as ovm

    done: dict[str, str] = {}
    html = importlib.util.find_spec("plotly") is not None
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(ovm, f"plot_{name}")(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(9, 5.5)
                fig.tight_layout()
                with atomic_write(study_dir / f"{name}.png", "wb") as f:
                    fig.savefig(f, format="png", dpi=110)
                plt.close(fig)
                done[name] = str(study_dir / f"{name}.png")
                if html:
                    with atomic_write(study_dir / f"{name}.html") as f:
                        getattr(ov, f"plot_{name}")(study).write_html(f, include_plotlyjs="cdn")
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need 2+ complete trials
            done[name] = f"skipped ({' '.join(str(e).split())[:120]})"
        finally:
            plt.close("all")
    return done
