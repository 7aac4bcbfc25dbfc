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


SEARCH_TYPES = ("categorical", "int", "float")
PRUNERS = ("none", "median", "successive_halving", "hyperband")


@dataclass
class SearchParam:
    """One dimension of the search space: categorical `choices`, or a `low`..`high` range."""

    type: str = _f("categorical", "categorical, int or float.")
    choices: list[Any] | None = _f(None, "Values to choose from (categorical).")
    low: float | None = _f(None, "Lower bound (int/float).")
    high: float | None = _f(None, "Upper bound (int/float).")
    log: bool = _f(False, "Sample on a log scale (int/float).")
    step: float | None = _f(None, "Step between values (int/float, optional).")

    def to_dict(self) -> dict[str, Any]:
        """The canonical form stored with a study: only the keys this type uses."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices or [])}
        d: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            d["step"] = self.step
        return d


def _number(v: Any) -> Any:
    """YAML 1.1 reads `1e-5` as a string: turn numeric strings back into numbers, leave the rest."""
    if isinstance(v, str):
        for conv in (int, float):
            try:
                return conv(v)
            except ValueError:
                pass
    return v


def is_config_field(dotted: str) -> bool:
    """True when `dotted` names a leaf field of Config (e.g. `lora.r`, not `lora` or `lora.rank`)."""
    cls: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = typing.get_type_hints(cls)[part]
        if not dataclasses.is_dataclass(cls):
            return i == len(parts) - 1
    return False


def parse_search_param(key: str, raw: Any, errs: list[str]) -> SearchParam | None:
    """Check one `tune.space` entry and return it as a SearchParam (None when it is unusable)."""
    where = f"tune.space.{key}"
    if not is_config_field(key):
        errs.append(f"{where}: {key!r} is not a config field; use a dotted field such as lora.r or train.lr")
        return None
    # tune loads the data once per worker, and tune/name/out describe the study itself, not a trial.
    if key in ("name", "out") or key.startswith(("data.", "tune.")):
        errs.append(f"{where}: data, tune, name and out cannot be searched (data is loaded once per worker); search model, lora or train fields")
        return None
    if not isinstance(raw, dict):
        errs.append(f"{where}: expected a mapping like {{type: categorical, choices: [4, 8]}}, got {raw!r}")
        return None
    known = {f.name for f in dataclasses.fields(SearchParam)}
    unknown = sorted(set(raw) - known)
    if unknown:
        errs.append(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return None
    p = SearchParam(**{k: _number(v) if k in ("low", "high", "step") else v for k, v in raw.items()})
    if p.type not in SEARCH_TYPES:
        errs.append(f"{where}.type: {p.type!r} is not a parameter type; use one of {', '.join(SEARCH_TYPES)}")
        return None
    if p.type == "categorical":
        if not isinstance(p.choices, list) or not p.choices:
            errs.append(f"{where}.choices: missing or empty; list the values to try, e.g. choices: [4, 8, 16]")
            return None
        p.choices = [_number(c) for c in p.choices]
        bad = [c for c in p.choices if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            errs.append(f"{where}.choices: {bad[0]!r} is not a plain value; write lists as one string, e.g. 'query,value'")
            return None
        if len(set(map(repr, p.choices))) != len(p.choices):
            errs.append(f"{where}.choices: {p.choices} repeats a value; list each choice once")
        return p
    if p.choices is not None:
        errs.append(f"{where}: choices only go with type categorical; give low and high for type {p.type}")
        return None
    for name in ("low", "high", "step"):
        v = getattr(p, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            errs.append(f"{where}.{name}: {v!r} is not a number")
            return None
    if p.low is None or p.high is None:
        errs.append(f"{where}: type {p.type} needs both low and high")
        return None
    if p.type == "int" and not all(float(v).is_integer() for v in (p.low, p.high, p.step or 1)):
        errs.append(f"{where}: type int needs whole-number low, high and step")
        return None
    if p.low >= p.high:
        errs.append(f"{where}: low ({p.low}) must be below high ({p.high})")
        return None
    if not isinstance(p.log, bool):
        errs.append(f"{where}.log: {p.log!r} must be true or false")
        return None
    if p.log and p.low <= 0:
        errs.append(f"{where}: a log scale needs low > 0 (got {p.low})")
        return None
    if p.step is not None and (p.step <= 0 or (p.log and not (p.type == "int" and p.step == 1))):
        errs.append(f"{where}.step: {p.step} must be positive and cannot be combined with log: true")
        return None
    if p.type == "int":
        p.low, p.high = int(p.low), int(p.high)
        p.step = None if p.step is None else int(p.step)
    else:
        p.low, p.high = float(p.low), float(p.high)
        p.step = None if p.step is None else float(p.step)
    return p


@dataclass
class TuneConfig:
    study_name: str = _f("loraclf", "Name of the Optuna study; re-running with the same name resumes it.")
    storage: str | None = _f(None, "RDB URL (sqlite:///..., postgresql://...); default: an SQLite file in the study directory.")
    direction: str = _f("maximize", "Optimise validation accuracy upwards.")
    trials: int = _f(20, "Trials to run in total for this study (all workers together).")
    timeout: float | None = _f(None, "Stop starting trials after this many seconds.")
    sampler_seed: int = _f(42, "Seed of the TPE sampler (each trial's draws depend on this seed and its number only).")
    sampler_startup_trials: int = _f(5, "Random trials before TPE starts modelling (optuna's default 10 is half of a small study).")
    pruner: str = _f("hyperband", f"Early stopping of bad trials: one of {', '.join(PRUNERS)}.")
    eval_points_per_epoch: int = _f(4, "Validation points per epoch a trial reports to the pruner (sets train.eval_every_steps; 0 keeps it).")
    pruner_startup_trials: int = _f(2, "median: finished trials before any pruning.")
    min_resource: int | None = _f(None, "successive_halving/hyperband: steps before the first pruning decision (default: the first evaluation).")
    reduction_factor: int = _f(3, "successive_halving/hyperband: keep 1 in this many trials at each rung.")
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
        "Search space: dotted config field -> {type: categorical|int|float, choices | low, high, log, step}.",
    )

    def search_params(self, errs: list[str] | None = None) -> dict[str, SearchParam]:
        """The space as checked SearchParams (problems go to `errs`; unusable entries are left out)."""
        errs = [] if errs is None else errs
        if not isinstance(self.space, dict) or not self.space:
            errs.append("tune.space: is empty; give at least one field, e.g. lora.r: {type: categorical, choices: [4, 8, 16]}")
            return {}
        out = {}
        for key, raw in self.space.items():
            p = parse_search_param(str(key), raw, errs)
            if p is not None:
                out[str(key)] = p
        return out

    def check(self, errs: list[str]) -> None:
        if self.trials < 1:
            errs.append(f"tune.trials: {self.trials} must be at least 1")
        if self.timeout is not None and self.timeout <= 0:
            errs.append(f"tune.timeout: {self.timeout} must be positive (or null for none)")
        if self.direction not in ("maximize", "minimize"):
            errs.append(f"tune.direction: {self.direction!r} must be maximize or minimize")
        if self.pruner not in PRUNERS:
            errs.append(f"tune.pruner: {self.pruner!r} is not a pruner; use one of {', '.join(PRUNERS)}")
        if not self.study_name or "/" in self.study_name or self.study_name.startswith("."):
            errs.append(f"tune.study_name: {self.study_name!r} must be a non-empty name without '/' (it names the study directory)")
        for name in ("sampler_startup_trials", "eval_points_per_epoch", "pruner_startup_trials", "max_retries"):
            if getattr(self, name) < 0:
                errs.append(f"tune.{name}: {getattr(self, name)} must not be negative")
        for name in ("heartbeat_interval", "grace_period"):
            if getattr(self, name) < 1:
                errs.append(f"tune.{name}: {getattr(self, name)} must be at least 1 (seconds)")
        if self.grace_period <= self.heartbeat_interval:
            errs.append(f"tune.grace_period: {self.grace_period} must exceed tune.heartbeat_interval ({self.heartbeat_interval}), or live trials count as dead")
        if self.min_resource is not None and self.min_resource < 1:
            errs.append(f"tune.min_resource: {self.min_resource} must be at least 1 (or null)")
        if self.reduction_factor < 2:
            errs.append(f"tune.reduction_factor: {self.reduction_factor} must be at least 2")
        self.search_params(errs)


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
