"""The run configuration: one dataclass per section, each field with its type, range and help.

The sections are plain dataclasses: code builds, copies and changes them freely (`Config()`,
`dataclasses.replace`, `dataclasses.asdict`, attribute assignment), and nothing is checked then.
What comes from a user (YAML, `key=value`) is checked by pydantic against the annotations below
(loader.py): `Int`/`Float`/`Bool`/`Text` say which values a field takes, `Field(ge=..)` its range,
`Literal` its choices. Floats refuse NaN and infinity. Cross-field checks are `model_validator`s.
(pydantic.dataclasses would validate in `__init__` too, so `dataclasses.replace(cfg.data, format=x)`
in evaluate.py and code-built DataConfigs that data.py checks itself would raise pydantic's
ValidationError, which is not a LoraclfError, instead of their one-line DataError.)

The built-in defaults are our recommendation, the same as configs/default.yaml (a test holds them
equal); configs/seed.yaml is the original study.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, model_validator
from pydantic_core import PydanticCustomError

from ..errors import brief
from .space import SearchParam, parse_space

Format = Literal["auto", "ag_news", "csv", "tsv", "jsonl", "parquet", "txt"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Scheduler = Literal["cosine", "linear", "constant"]
LoraBias = Literal["none", "all", "lora_only"]
LoraInit = Literal["default", "gaussian", "orthogonal"]
Tracker = Literal["none", "tensorboard", "mlflow"]
Pruner = Literal["none", "median", "successive_halving", "hyperband"]

FORMATS: tuple[str, ...] = typing.get_args(Format)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
SCHEDULERS: tuple[str, ...] = typing.get_args(Scheduler)
LORA_BIAS: tuple[str, ...] = typing.get_args(LoraBias)
LORA_INITS: tuple[str, ...] = typing.get_args(LoraInit)
TRACKERS: tuple[str, ...] = typing.get_args(Tracker)
PRUNERS: tuple[str, ...] = typing.get_args(Pruner)

# pydantic settings for every section: unknown keys are errors, NaN/inf are not numbers.
PYDANTIC_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def problem(text: str) -> PydanticCustomError:
    """One problem for loader.py to print as it is (after the field's dotted name)."""
    return PydanticCustomError("loraclf", "{text}", {"text": text})


def problems(texts: list[str]) -> PydanticCustomError:
    """Several problems, each naming its own field (cross-field checks)."""
    return PydanticCustomError("loraclf_problems", "{problems}", {"problems": texts})


# ---------------------------------------------------------------------------------------------
# Value types: what a field accepts from YAML or the command line.


def _delimiter(v: str) -> str:
    """One separator character; `\\t` or `tab` (what a shell or a single-quoted YAML string gives) is a tab."""
    v = {"\\t": "\t", "tab": "\t"}.get(v, v)
    if v == "":  # also what YAML makes of a bare | or >
        raise problem("is empty; give one character, e.g. ';' (quote YAML's | and >: data.delimiter=\"'|'\")")
    if len(v) != 1 or v in '"\r\n':
        raise problem(f"{brief(v)} is not a separator; give one character other than a quote or line break, e.g. ';' or '\\t'")
    return v


def _compile_setting(v: Any) -> Any:
    """model.compile: YAML's true/false, `auto` or `cudagraphs`."""
    if v is True or v is False or v in ("auto", "cudagraphs"):
        return v
    raise problem(f"{brief(v)} is not a compile setting; use auto, true, false or cudagraphs")


def _yaml_float(v: Any) -> Any:
    """YAML 1.1 reads `2e-5` (no dot) as a string: take it as the number it spells."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _number_as_text(v: Any) -> Any:
    """A model name or column that looks like a number (`data.label_column=3`) is still a name."""
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _comma_list(v: Any) -> Any:
    """`lora.target_modules=query,value` from the command line is a list of two names."""
    return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v


Int = Annotated[int, Strict()]  # no bools, no "3", no 3.0
Float = Annotated[float, BeforeValidator(_yaml_float), Strict()]  # ints widen to floats; no bools
Bool = Annotated[bool, Strict()]  # true/false only, not "yes" or 1
Text = Annotated[str, BeforeValidator(_number_as_text), Strict()]
TextList = Annotated[list[Text], BeforeValidator(_comma_list)]
CompileSetting = Annotated[Literal["auto", "cudagraphs"] | bool, BeforeValidator(_compile_setting)]
AtLeast1 = Annotated[Int, Field(ge=1)]
NotNegative = Annotated[Int, Field(ge=0)]


def _f(default: Any, help: str, *, hint: str | None = None, empty: str | None = None) -> Any:
    """A dataclass field with its help text (lists and dicts get a default_factory).

    hint: added in brackets to a range error (e.g. "or null for all rows").
    empty: the fix printed when a list or name is empty.
    """
    meta = {"help": help, **({"hint": hint} if hint else {}), **({"empty": empty} if empty else {})}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type) -> type:
    """A config section: a plain dataclass that pydantic validates with PYDANTIC_CONFIG."""
    cls = dataclasses.dataclass(cls)
    cls.__pydantic_config__ = PYDANTIC_CONFIG  # type: ignore[attr-defined]
    return cls


# ---------------------------------------------------------------------------------------------
# Sections


@section
class DataConfig:
    dataset: Text | None = _f("ag_news", "Hub dataset id, used when `train_file` is not set (a file run's resolved config shows null).")
    dataset_config: Text | None = _f(None, "Hub dataset config name, if the dataset has several.")
    train_file: Text | None = _f(None, "Local training file (CSV/TSV/JSONL/Parquet, or the original AG News CSV).")
    validation_file: Text | None = _f(None, "Local validation file; otherwise a seeded stratified split of the training data.")
    test_file: Text | None = _f(None, "Local test file, scored once with the best adapter at the end.")
    format: Format = _f("auto", f"File format: one of {', '.join(FORMATS)}; `auto` detects it from the name and content.")
    delimiter: Annotated[Text, AfterValidator(_delimiter)] | None = _f(
        None, "Field separator of CSV files, one character (e.g. ';' for European CSV); null: ','. TSV files are "
        "always tab-separated. predict and evaluate read CSV input with the run's setting.")
    text_columns: Annotated[TextList, Field(min_length=1)] = _f(
        ["text"], "Text column(s); several are joined with a space (e.g. [title, description]).", empty="name at least one text column")
    label_column: Text = _f("label", "Label column: integer ids or string names.")
    label_names: TextList | None = _f(None, "Explicit label set and order; default: taken from the data.")
    val_fraction: Annotated[Float, Field(gt=0, le=0.5)] = _f(
        0.1, "Share of the training data held out for validation when no validation file is given.")
    max_train_rows: AtLeast1 | None = _f(
        None, "Use a seeded stratified subsample of this many training rows (quick runs).", hint="or null for all rows")
    max_eval_rows: AtLeast1 | None = _f(None, "Cap validation and test rows at this many (quick runs).", hint="or null for all rows")

    @model_validator(mode="after")
    def _file_run_has_no_hub_dataset(self) -> DataConfig:
        if self.train_file is not None:
            self.dataset = None  # not read: a saved config must not say the run trained on it
        return self


@section
class ModelConfig:
    name: Annotated[Text, Field(min_length=1)] = _f(
        "FacebookAI/roberta-base", "Pretrained encoder: a hub id or a local directory.", empty="give a hub id or a local model directory")
    max_length: Annotated[Int, Field(ge=8)] = _f(
        128, "Longest token sequence; longer texts are truncated (AG News texts are ~50 tokens).", hint="128 suits news text")
    precision: Precision = _f(
        "auto", "auto: bf16 on GPUs and on CPUs with native bf16 matrix instructions, fp16 on older GPUs, fp32 otherwise; or fp32/bf16/fp16.")
    compile: CompileSetting = _f(
        "auto", "torch.compile, one graph for the whole run (on GPUs a CUDA graph per length bucket): auto = on CUDA, and on CPU "
        "only where it pays (see loraclf.compiled); true/false force it; cudagraphs = on a GPU, the eager step captured as a "
        "CUDA graph per length bucket with no torch.compile (milliseconds instead of a compile). A model that fails to "
        "compile or capture runs eager.")
    attn_implementation: Literal["auto", "sdpa", "eager"] = _f(
        "auto", "Attention kernel: auto = the fastest the architecture supports (sdpa where it has it, else eager); "
        "sdpa (fused) or eager. A run records the kernel it used.")


@section
class LoraConfig:
    r: AtLeast1 = _f(16, "Adapter rank: more capacity and memory as it grows (4-16 is typical).")
    alpha: Annotated[Int, Field(gt=0)] = _f(16, "Scaling numerator: the update is scaled by alpha/r (alpha = 2r is a common choice).")
    dropout: Annotated[Float, Field(ge=0, lt=1)] = _f(0.1, "Dropout on the adapter's input.")
    target_modules: Annotated[TextList, Field(min_length=1)] = _f(
        ["auto"], "Module names that get adapters: auto = the attention's query and value projections of whatever "
        "architecture is loaded (a fused QKV projection where it has one); all-linear = every linear layer outside the "
        "head; or names (BERT/RoBERTa: query, key, value, dense; DistilBERT q_lin, v_lin; DeBERTa query_proj, value_proj; "
        "MPNet q, v). A run records the resolved names.",
        empty="name at least one module (e.g. [query, value]) or use auto")
    bias: LoraBias = _f("none", f"Which biases train: one of {', '.join(LORA_BIAS)}.")
    modules_to_save: TextList = _f(
        ["pooler"], "Extra modules trained in full and saved with the adapter (the head always is); "
        "a name the model lacks is skipped (RoBERTa has no pooler; BERT-style models do).")
    use_rslora: Bool = _f(
        True, "Rank-stabilised LoRA: scale the update by alpha/sqrt(r) instead of alpha/r (keeps higher ranks learning).")
    use_dora: Bool = _f(
        False, "DoRA: learn each adapted weight's magnitude apart from its direction (more trainable weights, a slower step).")
    init: LoraInit = _f(
        "default", f"Adapter initialisation: one of {', '.join(LORA_INITS)} (default: Kaiming-uniform A, zero B; "
        "orthogonal needs an even r). All start from the unchanged base model, so runs can share one base.")

    @model_validator(mode="after")
    def _orthogonal_needs_even_rank(self) -> LoraConfig:
        if self.init == "orthogonal" and self.r % 2:
            raise problems([f"lora.init: orthogonal needs an even lora.r (got {self.r}); use lora.r={self.r + 1} or lora.init=default"])
        return self


@section
class TrainConfig:
    lr: Annotated[Float, Field(gt=0, le=1)] = _f(4e-4, "Peak learning rate of AdamW (the adapters' A matrices).", hint="LoRA: 1e-4 to 1e-3")
    batch_size: AtLeast1 = _f(
        32, "Examples per forward pass over all processes together (the global micro-batch): with N processes "
        "each takes batch_size/N, so it must be a multiple of N.")
    eval_batch_size: AtLeast1 = _f(128, "Examples per forward pass during evaluation, in each process.")
    grad_accum: AtLeast1 = _f(1, "Micro-batches per optimizer step; examples per step = batch_size x grad_accum.")
    epochs: AtLeast1 = _f(3, "Passes over the training data.")
    max_steps: AtLeast1 | None = _f(None, "Stop after this many optimizer steps (overrides epochs when smaller).", hint="or null")
    weight_decay: Annotated[Float, Field(ge=0)] = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm).")
    warmup_steps: NotNegative = _f(0, "Linear warmup steps; capped at the run's total steps (0: use warmup_ratio).")
    warmup_ratio: Annotated[Float, Field(ge=0, lt=1)] = _f(0.06, "Warmup as a share of total steps; used when warmup_steps is 0.")
    scheduler: Scheduler = _f("cosine", f"Learning-rate schedule after warmup: one of {', '.join(SCHEDULERS)}.")
    head_lr: Annotated[Float, Field(gt=0, le=1)] | None = _f(
        4e-3, "Peak learning rate of the classification head and the other modules_to_save (e.g. the pooler), which "
        "train in full from a fresh start; null: train.lr.", hint="or null for train.lr")
    lora_plus_ratio: Annotated[Float, Field(ge=1)] = _f(
        4.0, "LoRA+: the adapters' B matrices learn this many times faster than train.lr (A matrices at train.lr); "
        "1 turns it off. The LoRA+ paper suggests ~16 with a smaller train.lr.")
    loss: Text = _f("cross_entropy", "Training loss: cross_entropy (with train.label_smoothing; filler rows of a "
                    "fixed-shape batch never count). Validation and test losses are plain cross-entropy.")
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = _f(
        0.2, "Label smoothing of the training loss (validation and test losses are not smoothed).")
    max_grad_norm: Annotated[Float, Field(ge=0)] = _f(1.0, "Clip the gradient norm to this (0 turns clipping off).")
    seed: Int = _f(42, "Seed for the split, sampling, dropout and initialisation.")
    group_by_length: Bool = _f(True, "Batch examples of similar length together to cut padding.")
    eval_every_steps: NotNegative = _f(0, "Also evaluate every N optimizer steps (0: only at the end of each epoch).")
    early_stopping_patience: NotNegative = _f(
        2, "Stop after this many evaluations without a better validation accuracy (0: never).")
    checkpoint_every_steps: AtLeast1 = _f(50, "Write a resumable checkpoint every N optimizer steps (and at every evaluation).")
    log_every_steps: AtLeast1 = _f(10, "Write a train-loss line to the log every N optimizer steps.")
    tracker: Tracker = _f("none", f"Experiment tracking through accelerate: one of {', '.join(TRACKERS)}.")
    threads: AtLeast1 | None = _f(None, "CPU threads for torch (default: all cores).", hint="or null for all cores")
    cpu_dropout: Bool = _f(
        True, "CPU training (eager or compiled) draws its dropout masks four per 64-bit random number "
        "(loraclf.train.cpu_dropout) instead of one Bernoulli draw per element: the same rates, a faster step; false: "
        "torch's own dropout (inductor's in a compiled step). GPUs always use torch's.")
    progress: Bool = _f(True, "Show a progress bar.")


def _study_dir_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise problem(f"{brief(name)} must be a non-empty name without '/' (it names the study directory)")
    return name


# Searches around the recommended settings (configs/default.yaml says why); configs/seed.yaml
# holds the original study's table.
DEFAULT_SPACE: dict[str, Any] = {
    "train.lr": {"type": "float", "low": 1.5e-4, "high": 1.5e-3, "log": True},
    "train.head_lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "train.label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
    "lora.r": {"type": "categorical", "choices": [8, 16]},
    "lora.dropout": {"type": "float", "low": 0.0, "high": 0.2},
}


def _check_space(space: dict[Any, Any]) -> dict[Any, Any]:
    errs: list[str] = []
    parse_space(space, errs, is_config_field)
    if errs:
        raise problems(errs)
    return space


@section
class TuneConfig:
    study_name: Annotated[Text, AfterValidator(_study_dir_name)] = _f(
        "default", "Name of the Optuna study; re-running with the same name resumes it.")
    storage: Text | None = _f(None, "RDB URL (sqlite:///..., postgresql://...); default: an SQLite file in the study directory.")
    direction: Literal["maximize", "minimize"] = _f("maximize", "Optimise validation accuracy upwards.")
    trials: AtLeast1 = _f(20, "Trials to run in total for this study (all workers together).")
    timeout: Annotated[Float, Field(gt=0)] | None = _f(None, "Stop starting trials after this many seconds.", hint="or null for none")
    sampler_seed: Int = _f(42, "Seed of the TPE sampler (each trial's draws depend on this seed and its number only).")
    sampler_startup_trials: NotNegative = _f(
        5, "Random trials before TPE starts modelling (optuna's default 10 is half of a small study).")
    pruner: Pruner = _f("hyperband", f"Early stopping of bad trials: one of {', '.join(PRUNERS)}.")
    eval_points_per_epoch: NotNegative = _f(
        4, "Validation points per epoch a trial reports to the pruner (sets train.eval_every_steps; 0 keeps it).")
    pruner_startup_trials: NotNegative = _f(2, "median: finished trials before any pruning.")
    min_resource: AtLeast1 | None = _f(
        None, "successive_halving/hyperband: steps before the first pruning decision (default: the first evaluation).", hint="or null")
    reduction_factor: Annotated[Int, Field(ge=2)] = _f(3, "successive_halving/hyperband: keep 1 in this many trials at each rung.")
    heartbeat_interval: AtLeast1 = _f(
        10, "Seconds between a running trial's heartbeats (a dead worker's trial is failed and retried).", hint="seconds")
    grace_period: AtLeast1 = _f(30, "Seconds without a heartbeat after which a trial counts as dead.", hint="seconds")
    max_retries: NotNegative = _f(2, "Times a trial whose worker died is retried.")
    space: Annotated[dict[Any, Any], AfterValidator(_check_space)] = _f(
        DEFAULT_SPACE, "Search space: dotted config field -> {type: categorical|int|float, choices | low, high, log, step}.")

    def search_params(self, errs: list[str] | None = None) -> dict[str, SearchParam]:
        """The space as checked SearchParams (problems go to `errs`; unusable entries are left out)."""
        return parse_space(self.space, errs, is_config_field)

    @model_validator(mode="after")
    def _heartbeat_within_grace(self) -> TuneConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise problems([f"tune.grace_period: {self.grace_period} must exceed tune.heartbeat_interval "
                            f"({self.heartbeat_interval}), or live trials count as dead"])
        return self


@section
class Config:
    name: Text = _f("default", "Run name; the run directory defaults to runs/<name>.")
    out: Text | None = _f(None, "Run directory (default runs/<name>).")
    data: DataConfig = dataclasses.field(default_factory=DataConfig, metadata={"help": "Where the texts and labels come from."})
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig, metadata={"help": "Which encoder and how it runs."})
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig, metadata={"help": "The low-rank adapters."})
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig, metadata={"help": "Optimisation and the training loop."})
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig, metadata={"help": "Hyperparameter search (loraclf tune)."})

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def with_absolute_paths(self) -> "Config":
        """A copy whose local paths (data files, a local model directory, out) are absolute, so a run's
        saved config resumes and loads from any working directory. Hub ids stay as they are."""
        def absolute(p: str | None) -> str | None:
            return None if p is None else str(Path(p).expanduser().resolve())

        model_name = self.model.name
        if Path(model_name).expanduser().exists():  # a local directory; otherwise a hub id
            model_name = absolute(model_name)
        return dataclasses.replace(
            self,
            out=absolute(self.out),
            data=dataclasses.replace(self.data, train_file=absolute(self.data.train_file),
                                     validation_file=absolute(self.data.validation_file), test_file=absolute(self.data.test_file)),
            model=dataclasses.replace(self.model, name=model_name),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "lora": LoraConfig, "train": TrainConfig, "tune": TuneConfig}


# ---------------------------------------------------------------------------------------------
# Field lookup and help


def field_at(dotted: str) -> tuple[type, dataclasses.Field] | None:
    """(section class, dataclass field) for a dotted leaf or section name, or None."""
    cls: Any = Config
    found = None
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        found = (cls, fields[part])
        cls = typing.get_type_hints(cls)[part]
    return found


def is_config_field(dotted: str) -> bool:
    """True when `dotted` names a leaf field of Config (e.g. `lora.r`, not `lora` or `lora.rank`)."""
    found = field_at(dotted)
    return found is not None and not dataclasses.is_dataclass(typing.get_type_hints(found[0])[found[1].name])


def constraints(cls: type, name: str) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The range bounds ({'ge': 1, ...}) and Literal choices declared on field `name` of `cls`."""
    bounds: dict[str, Any] = {}
    choices: tuple[Any, ...] = ()
    todo = [typing.get_type_hints(cls, include_extras=True)[name]]
    while todo:
        tp = todo.pop()
        if typing.get_origin(tp) is Annotated:
            todo.append(tp.__origin__)
            for m in tp.__metadata__:
                for c in getattr(m, "metadata", [m]):  # Field(ge=1) holds annotated_types.Ge(1)
                    for key in ("ge", "gt", "le", "lt"):
                        if hasattr(c, key):
                            bounds[key] = getattr(c, key)
        elif typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
        else:
            todo.extend(a for a in typing.get_args(tp) if typing.get_origin(a) in (Annotated, Literal))
    return bounds, choices


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
