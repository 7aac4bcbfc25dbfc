"""Adapters over shared base models: load every served run, one base model in memory per model.name.

Runs whose configs name the same base model share one copy of it: the first run of a group is loaded
by `RunDir.load` onto a freshly loaded base, the others are attached to that PeftModel with
`load_adapter`. Each adapter keeps its own classification head (PEFT `modules_to_save`); a head whose
label count differs from the base's is pre-shaped from the saved weights, so a 4-class and a 2-class
run share one encoder. Scoring goes through each run's `Classifier`.

An adapter served with the onnx backend (run spec `DIR@onnx` or `--backend onnx`) is an
`OnnxClassifier` of its own: the run's merged model exported once into RUN/onnx (or an ONNX export
directory), with no base model and no group. Its session uses one intra-op thread per core; the
`MicroBatcher` runs one forward pass at a time for the whole process, so ONNX and torch adapters
never compete for the cores.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import LoraclfError, ModelError
from ..inference import Classifier, TextClassifier
from ..model import load_base_model, load_tokenizer
from ..rundir import LoadedRun, RunDir
from .settings import RunSpec, ServeSettings

# uvicorn configures this logger, so our lines appear beside its own.
log = logging.getLogger("uvicorn.error")


@dataclass
class BaseGroup:
    """One base model in memory and the PEFT adapters attached to it; `lock` guards set_adapter + forward."""

    base_name: str
    model: Any  # PeftModel holding every adapter of this base
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: str | None = None


@dataclass
class Adapter:
    """One served run: its public name, its backend, and its classifier.

    torch: a PEFT adapter (`key`) inside the group's shared model, scored by a `Classifier`.
    onnx: an `OnnxClassifier` of its own (`group` None).
    """

    name: str  # public name used by requests
    key: str  # PEFT adapter name inside the shared model (names with '.' are not valid module keys); "" for onnx
    classifier: TextClassifier  # tokenization + batched inference; a torch Classifier's run.model is the group's PeftModel
    group: BaseGroup | None  # None for onnx adapters
    backend: str = "torch"  # "torch" or "onnx"
    base_model: str = ""  # config model.name (from the export info for an ONNX export)

    @property
    def label_names(self) -> list[str]:
        return self.classifier.label_names

    @property
    def precision(self) -> str:
        """What the forward pass runs in: fp32, bf16 or fp16 (torch); fp32 or int8 (onnx)."""
        return str(self.classifier.precision)

    @property
    def merged(self) -> bool:
        """A torch adapter merged into a base of its own (`model.merge_for_inference`)."""
        return isinstance(self.classifier, Classifier) and self.classifier.run.merged

    @property
    def compiled(self) -> bool:
        """A torch adapter whose forward pass runs compiled (serve --compile)."""
        return isinstance(self.classifier, Classifier) and self.classifier.compiled_for()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities [n, k] with this adapter active (blocking: call from the worker thread)."""
        if self.group is None or self.merged:  # onnx, or merged into a base of its own: nothing shared to switch
            return self.classifier.predict_proba(texts)
        with self.group.lock:
            if self.group.active != self.key:
                self.group.model.set_adapter(self.key, inference_mode=True)
                self.group.active = self.key  # run_inference sizes its output by the active head, whatever its label count
            return self.classifier.predict_proba(texts)


def _shape_heads_for(model: Any, adapter_dir: Path, key: str) -> None:
    """Pre-create adapter `key`'s copies of the saved heads (modules_to_save) shaped like its saved weights.

    PEFT copies the base model's head for each new adapter, so a run with another label count would not load
    into it. ModulesToSaveWrapper keeps an existing copy, so we put one of the right shape there first.
    """
    from peft.utils.other import ModulesToSaveWrapper
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        return
    with safe_open(str(weights), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for wname, wrapper in model.named_modules():
        if not isinstance(wrapper, ModulesToSaveWrapper):
            continue
        prefix = wname + "."
        saved = {k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix) and k.endswith(".weight")}
        head, changed = copy.deepcopy(wrapper.original_module), False
        for sub, shape in saved.items():
            mod_path = sub[: -len(".weight")]
            mod = head.get_submodule(mod_path)
            if tuple(mod.weight.shape) == shape:
                continue
            if not isinstance(mod, torch.nn.Linear) or len(shape) != 2:
                raise ModelError(f"adapter '{adapter_dir}': its head layer {mod_path} has shape {shape}, "
                                 f"unlike the base model's {tuple(mod.weight.shape)}; serve it on its own")
            new = torch.nn.Linear(shape[1], shape[0], bias=mod.bias is not None, dtype=mod.weight.dtype, device=mod.weight.device)
            head.set_submodule(mod_path, new)
            changed = True
        if changed:
            wrapper.modules_to_save[key] = head


def _attach(group_run: LoadedRun, run: RunDir, key: str) -> LoadedRun:
    """Add `run`'s adapter to the group's PeftModel as `key`; the LoadedRun shares the model, device and precision."""
    cfg = run.read_config()
    _shape_heads_for(group_run.model, run.adapter_dir, key)
    try:
        group_run.model.load_adapter(str(run.adapter_dir), adapter_name=key, is_trainable=False)
    except LoraclfError:
        raise
    except Exception as e:  # PEFT raises ValueError/RuntimeError/KeyError for damaged or mismatched adapters
        raise ModelError(f"cannot load the adapter in '{run.adapter_dir}' onto base model '{cfg.model.name}': "
                         f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}; retrain the run or serve it alone") from None
    return dataclasses.replace(group_run, run_dir=run.path, config=cfg, tokenizer=load_tokenizer(str(run.tokenizer_dir)),
                               label_names=run.label_names())


def _onnx_adapter(spec: RunSpec, settings: ServeSettings) -> Adapter:
    """An ONNX adapter: the run's ONNX cache (exported now if missing) or an ONNX export directory."""
    from ..backends import onnx_classifier
    from ..onnx_backend import read_export_info

    clf = onnx_classifier(spec.path, int8=spec.int8, batch_size=settings.inference_batch_size, threads=settings.threads or None)
    info = read_export_info(spec.path)
    base = str(info.get("base_model", "")) if info is not None else RunDir(spec.path).read_config().model.name
    return Adapter(spec.name, "", clf, None, "onnx", base)


def load_adapters(specs: Sequence[RunSpec | tuple[str, Path]], settings: ServeSettings, load_base: Any = None) -> dict[str, Adapter]:
    """Load every run, sharing one base model among torch runs whose config names the same model.name
    (except runs trained with lora.bias != none, which change the base's biases and so get their own copy).
    ONNX adapters load on their own (no base model).

    Args:
        specs: RunSpecs from `parse_run_specs` ((name, run directory) pairs are torch runs).
        settings: device, precision and inference batch size.
        load_base: base-model loader (default `loraclf.model.load_base_model`); tests count calls through it.
    Returns:
        adapter name -> Adapter, in the order given.
    Raises:
        CheckpointError / ModelError: a run, its tokenizer, its adapter or its base model cannot be loaded,
            or an ONNX model cannot be exported or loaded.
        RunDirError: an onnx run whose ONNX cache cannot be written.
    """
    load_base = load_base or load_base_model
    specs = [RunSpec(*item) for item in specs]
    if settings.threads:
        # Before any compile: dynamo guards on the thread count, so changing it later would compile again.
        torch.set_num_threads(settings.threads)
    configs = {spec.name: RunDir(spec.path).read_config() for spec in specs if spec.backend == "torch"}

    def share_of(name: str) -> str:
        # A run that trained the base model's biases (lora.bias != none) changes the base itself: it gets its own.
        cfg = configs[name]
        return cfg.model.name if cfg.lora.bias == "none" else f"{cfg.model.name} ({name}: lora.bias={cfg.lora.bias})"

    sharing = Counter(share_of(name) for name in configs)
    groups: dict[str, tuple[BaseGroup, LoadedRun]] = {}
    adapters: dict[str, Adapter] = {}
    for i, spec in enumerate(specs):
        name = spec.name
        if spec.backend == "onnx":
            adapters[name] = _onnx_adapter(spec, settings)
            continue
        run, cfg, share = RunDir(spec.path), configs[name], share_of(name)
        if share not in groups:
            base = load_base(cfg.model, run.label_names())
            # A base that serves one adapter alone takes it merged in (faster); a shared one stays a PeftModel.
            loaded = run.load(settings.device, settings.precision, base_model=base, merge=sharing[share] == 1)
            key = "default" if loaded.merged else loaded.model.active_adapter  # PEFT's "default"
            groups[share] = (BaseGroup(cfg.model.name, loaded.model, active=key), loaded)
        else:
            key = f"adapter{i}"
            loaded = _attach(groups[share][1], run, key)
        torch_settings = settings.inference
        classifier = Classifier(loaded, torch_settings.batch_size, serving=True, compile=torch_settings.compile)
        adapters[name] = Adapter(name, key, classifier, groups[share][0], "torch", cfg.model.name)
    for group, first in groups.values():
        group.model.to(first.device)  # adapters attached after the first
        group.model.eval()
    return adapters


def warm_up(adapters: Iterable[Adapter]) -> None:
    """Compile each compiled torch adapter's forward pass before the server takes requests (so no request waits
    for a compile), saying so first: on a 2-core CPU it takes 10-30 s."""
    for a in [a for a in adapters if a.compiled]:  # compiled implies a torch adapter, so a.group is set
        log.info("compiling adapter %s (--compile false skips this)", a.name)
        started = time.perf_counter()
        with a.group.lock:
            a.classifier.warm_up()
        log.info("compiled adapter %s in %.0f s", a.name, time.perf_counter() - started)
