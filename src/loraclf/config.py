"""Run configuration: nested dataclasses loaded from YAML, overridden by `key=value`, then checked.

Every field carries its help text in `metadata["help"]`, so `loraclf config show` and the README
can print them. `load_config` gathers every problem (unknown key, wrong type, bad value) into one
ConfigError, one problem per line, each naming the dotted field, the bad value and the fix.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("cosine", "linear", "constant")
FORMATS = ("auto", "ag_news", "csv", "tsv", "jsonl", "parquet", "txt")
LORA_BIAS = ("none", "all", "lora_only")
TRACKERS = ("none", "tensorboard", "mlflow")


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its help text (lists and dicts get a default_factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class DataConfig:
    dataset: str = _f("ag_news", "Hub dataset id, used when `train_file` is not set.")
    dataset_config: str | None = _f(None, "Hub dataset config name, if the dataset has several.")
    train_file: str | None = _f(None, "Local training file (CSV/TSV/JSONL/Parquet, or the original AG News CSV).")
    validation_file: str | None = _f(None, "Local validation file; otherwise a seeded stratified split of the training data.")
    test_file: str | None = _f(None, "Local test file, scored once with the best adapter at the end.")
    format: str = _f("auto", f"File format: one of {', '.join(FORMATS)}; `auto` detects it from the name and content.")
    text_columns: list[str] = _f(["text"], "Text column(s); several are joined with a space (e.g. [title, description]).")
    label_column: str = _f("label", "Label column: integer ids or string names.")
    label_names: list[str] | None = _f(None, "Explicit label set and order; default: taken from the data.")
    val_fraction: float = _f(0.1, "Share of the training data held out for validation when no validation file is given.")
    max_train_rows: int | None = _f(None, "Use a seeded stratified subsample of this many training rows (quick runs).")
    max_eval_rows: int | None = _f(None, "Cap validation and test rows at this many (quick runs).")

    def check(self, errs: list[str]) -> None:
        if self.format not in FORMATS:
            errs.append(f"data.format: {self.format!r} is not a format; use one of {', '.join(FORMATS)}")
        if not (0.0 < self.val_fraction <= 0.5):
            errs.append(f"data.val_fraction: {self.val_fraction} is out of range; use a value in (0, 0.5]")
        if not self.text_columns:
            errs.append("data.text_columns: is empty; name at least one text column")
        for name in ("max_train_rows", "max_eval_rows"):
            v = getattr(self, name)
            if v is not None and v < 1:
                errs.append(f"data.{name}: {v} must be at least 1 (or null for all rows)")


@dataclass
class ModelConfig:
    name: str = _f("FacebookAI/roberta-base", "Pretrained encoder: a hub id or a local directory.")
    max_length: int = _f(128, "Longest token sequence; longer texts are truncated (AG News texts are ~50 tokens).")
    precision: str = _f("auto", "auto: bf16 on GPUs and on CPUs with AMX/AVX-512-BF16, fp16 on older GPUs, fp32 otherwise; or fp32/bf16/fp16.")
    compile: bool = _f(False, "torch.compile the model (pays off on long runs; costs compile time at the start).")
    attn_implementation: str = _f("sdpa", "Attention kernel: sdpa (fused) or eager.")

    def check(self, errs: list[str]) -> None:
        if not self.name:
            errs.append("model.name: is empty; give a hub id or a local model directory")
        if self.max_length < 8:
            errs.append(f"model.max_length: {self.max_length} is too small; use at least 8 (128 suits news text)")
        if self.precision not in PRECISIONS:
            errs.append(f"model.precision: {self.precision!r} is not a precision; use one of {', '.join(PRECISIONS)}")
        if self.attn_implementation not in ("sdpa", "eager"):
            errs.append(f"model.attn_implementation: {self.attn_implementation!r} is not supported; use sdpa or eager")


@dataclass
class LoraConfig:
    r: int = _f(8, "Adapter rank: more capacity and memory as it grows (4-16 is typical).")
    alpha: int = _f(16, "Scaling numerator: the update is scaled by alpha/r (alpha = 2r is a common choice).")
    dropout: float = _f(0.15, "Dropout on the adapter's input.")
    target_modules: list[str] = _f(["query", "value"], "Module names that get adapters (RoBERTa/BERT: query, key, value, dense).")
    bias: str = _f("none", f"Which biases train: one of {', '.join(LORA_BIAS)}.")
    modules_to_save: list[str] = _f([], "Extra modules trained in full and saved with the adapter (e.g. [pooler]); the head always is.")

    def check(self, errs: list[str]) -> None:
        if self.r < 1:
            errs.append(f"lora.r: {self.r} must be at least 1")
        if self.alpha <= 0:
            errs.append(f"lora.alpha: {self.alpha} must be positive")
        if not (0.0 <= self.dropout < 1.0):
            errs.append(f"lora.dropout: {self.dropout} is out of range; use a value in [0, 1)")
        if not self.target_modules:
            errs.append("lora.target_modules: is empty; name at least one module (e.g. [query, value])")
        if self.bias not in LORA_BIAS:
            errs.append(f"lora.bias: {self.bias!r} is not an option; use one of {', '.join(LORA_BIAS)}")


@dataclass
class TrainConfig:
    lr: float = _f(2e-5, "Peak learning rate of AdamW.")
    batch_size: int = _f(32, "Examples per device per forward pass (micro-batch).")
    eval_batch_size: int = _f(64, "Examples per forward pass during evaluation.")
    grad_accum: int = _f(2, "Micro-batches per optimizer step; global batch = batch_size x grad_accum x processes.")
    epochs: int = _f(3, "Passes over the training data.")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (overrides epochs when smaller).")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm).")
    warmup_steps: int = _f(500, "Linear warmup steps; capped at the run's total steps.")
    warmup_ratio: float = _f(0.0, "Warmup as a share of total steps; used when warmup_steps is 0.")
    scheduler: str = _f("cosine", f"Learning-rate schedule after warmup: one of {', '.join(SCHEDULERS)}.")
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this (0 turns clipping off).")
    seed: int = _f(42, "Seed for the split, sampling, dropout and initialisation.")
    group_by_length: bool = _f(True, "Batch examples of similar length together to cut padding.")
    eval_every_steps: int = _f(0, "Also evaluate every N optimizer steps (0: only at the end of each epoch).")
    early_stopping_patience: int = _f(0, "Stop after this many evaluations without a better validation accuracy (0: never).")
    checkpoint_every_steps: int = _f(50, "Write a resumable checkpoint every N optimizer steps (and at every evaluation).")
    log_every_steps: int = _f(10, "Write a train-loss line to the log every N optimizer steps.")
    tracker: str = _f("none", f"Experiment tracking through accelerate: one of {', '.join(TRACKERS)}.")
    threads: int | None = _f(None, "CPU threads for torch (default: all cores).")
    progress: bool = _f(True, "Show a progress bar.")

    def check(self, errs: list[str]) -> None:
        for name in ("batch_size", "eval_batch_size", "grad_accum", "epochs"):
            if getattr(self, name) < 1:
                errs.append(f"train.{name}: {getattr(self, name)} must be at least 1")
        if self.lr <= 0 or self.lr > 1:
            errs.append(f"train.lr: {self.lr} is out of range; use a value in (0, 1] (LoRA: 1e-4 to 1e-3)")
        if self.max_steps is not None and self.max_steps < 1:
            errs.append(f"train.max_steps: {self.max_steps} must be at least 1 (or null)")
        if self.weight_decay < 0:
            errs.append(f"train.weight_decay: {self.weight_decay} must not be negative")
        if self.warmup_steps < 0 or not (0.0 <= self.warmup_ratio < 1.0):
            errs.append("train.warmup_steps/warmup_ratio: must be >= 0 and the ratio below 1")
        if self.scheduler not in SCHEDULERS:
            errs.append(f"train.scheduler: {self.scheduler!r} is not a schedule; use one of {', '.join(SCHEDULERS)}")
        if self.tracker not in TRACKERS:
            errs.append(f"train.tracker: {self.tracker!r} is not a tracker; use one of {', '.join(TRACKERS)}")
        for name in ("eval_every_steps", "early_stopping_patience", "max_grad_norm"):
            if getattr(self, name) < 0:
                errs.append(f"train.{name}: {getattr(self, name)} must not be negative")
        for name in ("checkpoint_every_steps", "log_every_steps"):
            if getattr(self, name) < 1:
                errs.append(f"train.{name}: {getattr(self, name)} must be at least 1")
        if self.threads is not None and self.threads < 1:
            errs.append(f"train.threads: {self.threads} must be at least 1 (or null for all cores)")


@dataclass
class SearchParam:
    """One dimension of the search space: categorical `choices`, or a `low`..`high` range."""

    type: str = _f("categorical", "categorical, int or float.")
    choices: list[Any] | None = _f(None, "Values to choose from (categorical).")
    low: float | None = _f(None, "Lower bound (int/float).")
    high: float | None = _f(None, "Upper bound (int/float).")
    log: bool = _f(False, "Sample on a log scale (int/float).")
    step: float | None = _f(None, "Step between values (int/float, optional).")


@dataclass
class TuneConfig:
    study_name: str = _f("loraclf", "Name of the Optuna study; re-running with the same name resumes it.")
    storage: str | None = _f(None, "RDB URL (sqlite:///..., postgresql://...); default: an SQLite file in the study directory.")
    direction: str = _f("maximize", "Optimise validation accuracy upwards.")
    trials: int = _f(20, "Trials to run in total for this study (all workers together).")
    timeout: float | None = _f(None, "Stop starting trials after this many seconds.")
    sampler_seed: int = _f(42, "Seed of the TPE sampler.")
    pruner: str = _f("hyperband", "none, median, successive_halving or hyperband.")
    heartbeat_interval: int = _f(10, "Seconds between a running trial's heartbeats (a dead worker's trial is failed and retried).")
    grace_period: int = _f(30, "Seconds without a heartbeat after which a trial counts as dead.")
    max_retries: int = _f(2, "Times a trial whose worker died is retried.")
    space: dict[str, Any] = _f(
        {
            "lora.r": {"type": "categorical", "choices": [4, 8, 16]},
            "lora.alpha": {"type": "categorical", "choices": [8, 16, 32]},
            "lora.dropout": {"type": "float", "low": 0.05, "high": 0.2},
            "train.lr": {"type": "categorical", "choices": [1e-5, 2e-5, 3e-5]},
            "train.epochs": {"type": "categorical", "choices": [2, 3]},
        },
        "Search space: dotted config field -> {type, choices | low, high, log, step}.",
    )

    def check(self, errs: list[str]) -> None:
        if self.trials < 1:
            errs.append(f"tune.trials: {self.trials} must be at least 1")
        if self.direction not in ("maximize", "minimize"):
            errs.append(f"tune.direction: {self.direction!r} must be maximize or minimize")
        if self.pruner not in ("none", "median", "successive_halving", "hyperband"):
            errs.append(f"tune.pruner: {self.pruner!r} is not a pruner; use none, median, successive_halving or hyperband")


@dataclass
class Config:
    name: str = _f("run", "Run name; the run directory defaults to runs/<name>.")
    out: str | None = _f(None, "Run directory (default runs/<name>).")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Where the texts and labels come from."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Which encoder and how it runs."})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "The low-rank adapters."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation and the training loop."})
    tune: TuneConfig = field(default_factory=TuneConfig, metadata={"help": "Hyperparameter search (loraclf tune)."})

    def check(self) -> list[str]:
        errs: list[str] = []
        for section in (self.data, self.model, self.lora, self.train, self.tune):
            section.check(errs)
        return errs

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading: dict -> dataclasses with type checks, gathering every problem before failing.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str, errs: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            v = _coerce(value, a, where, sub)
            if not sub:
                return v
        errs.append(f"{where}: {value!r} has the wrong type; expected {_type_name(tp)}")
        return value
    if tp is Any:
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # `lora.target_modules=query,value` from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            errs.append(f"{where}: {value!r} has the wrong type; expected a list")
            return value
        return [_coerce(v, item_tp, f"{where}[{i}]", errs) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errs.append(f"{where}: {value!r} has the wrong type; expected a mapping")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errs.append(f"{where}: {value!r} has the wrong type; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errs.append(f"{where}: {value!r} has the wrong type; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `2e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errs.append(f"{where}: {value!r} has the wrong type; expected a number")
            return value
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a model name or column that looks like a number
        if not isinstance(value, str):
            errs.append(f"{where}: {value!r} has the wrong type; expected a string")
        return value
    return value


def _build(cls: type, raw: Any, prefix: str, errs: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errs.append(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(fields)
            errs.append(f"{where}: unknown key; valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {valid}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{where}.", errs)
        else:
            kwargs[key] = _coerce(value, tp, where, errs)
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    """Parse a command-line value as YAML (numbers, true/false, null, [lists]); fall back to the string."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def get_dotted(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; check --config (presets are in configs/)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{at}; fix its syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text; re-save it as UTF-8") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (data, model, lora, train, tune)")
    return raw


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Apply `key=value` overrides to `raw`, build the dataclasses and check them; one ConfigError for all problems."""
    raw = copy.deepcopy(raw)
    errs: list[str] = []
    for item in overrides or []:
        if "=" not in item:
            errs.append(f"{item!r}: overrides are key=value with a dotted key, e.g. lora.r=16")
            continue
        key, _, text = item.partition("=")
        set_dotted(raw, key.strip(), _parse_scalar(text))
    cfg = _build(Config, raw, "", errs)
    if not errs:
        errs.extend(cfg.check())
    if errs:
        raise ConfigError("; ".join(errs) if len(errs) == 1 else "config has errors: " + "; ".join(errs))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the built-in defaults), apply overrides, validate."""
    raw = read_yaml(path) if path else {}
    return config_from_dict(raw, overrides)


def describe_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every leaf field, for `loraclf config show` and docs."""
    rows = []
    inst = cls()
    for f in dataclasses.fields(cls):
        value = getattr(inst, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe_fields(type(value), f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", repr(value) if not isinstance(value, dict) else "{...}", f.metadata.get("help", "")))
    return rows
