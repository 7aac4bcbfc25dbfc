"""Inference: autocast, batched logits over token ids, and `Classifier`, the one way to run a trained run.

    from loraclf.inference import Classifier
    clf = Classifier.from_run_dir("runs/default")        # loads base model + adapter once
    clf.predict(["Stocks rally as rates fall"])            # -> ["Business"]
    clf.predict_ids(["..."])                               # -> [2]
    clf.predict_proba(["..."])                             # -> array [n, num_labels], rows sum to 1
    clf.classify(["..."])                                  # -> [{"label": "Business", "id": 2, "score": 0.97}]

`loraclf.backends.load_classifier(path, InferenceSettings(backend="onnx"))` gives the same interface on ONNX Runtime (CPU; see
`loraclf.onnx_backend`); `TextClassifier` is that interface.

Training's evaluation, `evaluate`, `predict`, `tune` and `serve` all score through `run_inference`:
length-sorted batches (little padding), `inference_mode`, results back in input order. Texts longer
than the run's model.max_length are truncated, never dropped; empty strings are classified like any
other text, so outputs always line up with inputs.

`Classifier.from_run_dir` merges LoRA into the base for inference (`model.merge_for_inference`), and
`compile` (--compile) decides when the forward pass runs compiled (`compiled.inference_compile_enabled`):
one graph for every batch shape, and on CPU a merged model compiles with frozen weights.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch

from .batching import DeviceTokens, fixed_rows, inference_passes, pad_batch, pad_id_of, tokenize
from .compiled import compiled_logits, inference_compile_enabled
from .config.inference import InferenceSettings, compile_choice
from .metrics import ScoresFromLogits
from .model import DTYPES, stored_in
from .rundir import LoadedRun, RunDir

def autocast_context(device: torch.device, precision: str, model: torch.nn.Module | None = None) -> Any:
    """Autocast to `precision`'s dtype (fp32: none); none either for a `model` stored wholly in that dtype
    (`model.stored_in`: a merged CPU bf16 model, `model.merge_for_inference`)."""
    dtype = DTYPES.get(precision)
    if dtype is None or (model is not None and stored_in(model, dtype)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def scoring(model: torch.nn.Module, device: torch.device, precision: str) -> Iterator[None]:
    """How every inference pass runs: eval mode (the model's mode is restored afterwards), no autograd,
    the run's autocast (none for a model already stored in the compute dtype)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_context(device, precision, model):
            yield
    finally:
        model.train(was_training)


def run_inference(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    pad_id: int = 0,
    indices: Sequence[int] | None = None,
    max_tokens: int | None = None,
    *,
    compiled: bool = False,
    max_length: int | None = None,
    merged: bool = False,
) -> np.ndarray:
    """Logits (float32, shape [n, num_labels]) for `token_ids`, in input order.

    Args:
        batch_size: rows per forward pass at most (compiled or on a GPU: per pass of max_length tokens; shorter
            texts go in more rows, see `run_inference_on_device`).
        indices: score only these rows (e.g. this process's shard); the result is in their order.
        max_tokens: padded tokens per forward pass at most; on CPU at most `batching.CPU_INFERENCE_MAX_TOKENS` when
            not given. The passes are `batching.inference_passes`'s (its padding and grouping depend on the device
            and precision).
        compiled: run the forward pass compiled (`run_inference_on_device`, as every pass on a GPU runs).
        max_length: the run's model.max_length, the widest compiled pass (and its token budget).
        merged: the model is merged for inference only (`LoadedRun.merged`): a CPU compile may freeze its weights.
    """
    rows = list(range(len(token_ids))) if indices is None else list(indices)
    if not rows:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    if compiled or device.type == "cuda":
        return run_inference_on_device(model, [token_ids[i] for i in rows], batch_size, device, precision, pad_id,
                                       max_tokens=max_tokens, max_length=max_length, merged=merged, compiled=compiled)
    out: np.ndarray | None = None
    passes = inference_passes([len(token_ids[i]) for i in rows], batch_size, device.type, precision,
                              max_tokens=max_tokens, max_width=max_length)
    with scoring(model, device, precision):
        for width, pos in passes:
            batch = pad_batch([token_ids[rows[p]] for p in pos], pad_id, width=width)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = model(**batch).logits.float().cpu().numpy()
            if out is None:  # sized by the head that ran: adapters sharing a base may differ in label count
                out = np.empty((len(rows), logits.shape[1]), dtype=np.float32)
            out[pos] = logits
    assert out is not None  # rows is not empty, so at least one batch ran
    return out


def run_inference_on_device(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    pad_id: int = 0,
    *,
    max_tokens: int | None = None,
    max_length: int | None = None,
    merged: bool = False,
    compiled: bool = True,
) -> np.ndarray:
    """`run_inference` with ids on the device (`batching.DeviceTokens`), length-sorted batches up to a token budget
    (default: `batch_size` rows of `max_length` tokens, on CPU at most `batching.CPU_INFERENCE_MAX_TOKENS`; short
    texts go in up to 8x more rows) and the forward pass compiled (`compiled.compiled_logits`) or eager. Logits stay
    on the device until the end: one copy back, no host sync per batch. Every pass on a GPU runs this way, eager
    too, because a GPU is only busy with large batches queued back to back (bench/FINDINGS_gpu.md).

    Rows and width are dynamic sizes (one graph for every batch): batches pad to their longest row
    (`batching.inference_passes` with on_device). A one-row batch gets one masked copy, since a dimension of size 1
    would compile a graph of its own."""
    lengths = [len(s) for s in token_ids]
    max_width = max_length or max(lengths)
    batches = inference_passes(lengths, batch_size, device.type, precision, max_tokens=max_tokens,
                               max_width=max_width, on_device=True)
    tokens = DeviceTokens(token_ids, pad_id, device, width=max_width)
    if compiled:
        logits_of = compiled_logits(model, device, merged=merged)
    else:
        def logits_of(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    out: torch.Tensor | None = None
    with scoring(model, device, precision):
        for width, pos in batches:
            rows = torch.as_tensor(fixed_rows(pos, max(2, len(pos))), dtype=torch.long).to(device, non_blocking=True)
            batch = tokens.batch(rows, width)
            logits = logits_of(batch["input_ids"], batch["attention_mask"])[: len(pos)]
            if out is None:  # sized by the head that ran, as in run_inference
                out = torch.empty((len(token_ids), logits.shape[1]), dtype=torch.float32, device=device)
            out[rows[: len(pos)]] = logits
    assert out is not None
    return out.cpu().numpy()


class TextClassifier(Protocol):
    """What `Classifier` and `onnx_backend.OnnxClassifier` both offer (a server adapter can hold either)."""

    max_length: int
    batch_size: int

    @property
    def label_names(self) -> list[str]: ...
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]: ...
    def logits(self, texts: Sequence[str]) -> np.ndarray: ...
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...
    def predict_ids(self, texts: Sequence[str]) -> list[int]: ...
    def predict(self, texts: Sequence[str]) -> list[str]: ...
    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]: ...


class Classifier(ScoresFromLogits):
    """A trained run ready to classify text; texts longer than model.max_length are truncated, not dropped."""

    def __init__(self, run: LoadedRun, batch_size: int | None = None, *, serving: bool = False,
                 compile: bool | str = "auto", compile_setting: bool | str | None = None) -> None:
        """`serving`: a long-lived server (on CPU, `auto` compiles then). `compile`: --compile true, false or auto
        (`compiled.inference_compile_enabled`); not the run's model.compile, which chose for its training.
        `compile_setting`: compile's old name."""
        self.run = run
        self.batch_size = batch_size or max(run.config.train.eval_batch_size, 64)
        self.max_length = run.config.model.max_length
        self.pad_id = pad_id_of(run.tokenizer)
        self.compile = compile_choice(_renamed(compile_setting, compile))
        self.serving = serving

    def compiled_for(self, rows: int | None = None) -> bool:
        """Whether scoring `rows` texts at once runs compiled (`compiled.inference_compile_enabled`)."""
        return inference_compile_enabled(self.compile, self.run.device, self.run.merged, rows, self.serving,
                                         self.run.precision)

    def warm_up(self) -> None:
        """Compile the forward pass now, so that no request waits for a compile: one graph serves every batch
        (rows and width dynamic); a short and a full-width batch check that neither compiles another."""
        if not self.compiled_for():
            return
        for width in (8, self.max_length):
            self._scores([[self.pad_id] * width] * 2, compiled=True)

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path | RunDir,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int | None = None,
        base_model: torch.nn.Module | None = None,
        merge: bool = True,
        compile: bool | str = "auto",
        *,
        settings: InferenceSettings | None = None,
        compile_setting: bool | str | None = None,
    ) -> "Classifier":
        """Load a trained run once for repeated predictions.

        Args:
            run_dir: directory written by `loraclf train` (or `loraclf export` without --merged).
            device: "cpu", "cuda", ... (default: a GPU when present).
            precision: "auto", "fp32", "bf16" or "fp16".
            batch_size: texts per forward pass (default: max(train.eval_batch_size, 64)).
            base_model: an already loaded base model to attach the adapter to.
            merge: merge the adapter into the base, weights in the compute dtype (`model.merge_for_inference`):
                faster; False keeps the PeftModel (to switch or add adapters on `clf.run.model`).
            compile: --compile auto|true|false (see `Classifier`); `compile_setting` is its old name.
            settings: device, precision, batch_size and compile in one (as the CLI builds them); the keyword
                arguments above are then ignored.

        Raises:
            ConfigError: unknown device or precision, or a GPU asked for where there is none.
            CheckpointError: the directory is not a finished run.
            ModelError: the base model or tokenizer cannot be loaded.
        """
        if settings is None:  # the Python API's keywords, checked as the CLI's options are
            settings = InferenceSettings(device=device, precision=precision, batch_size=batch_size,
                                         compile=_renamed(compile_setting, compile))
        rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        loaded = rd.load(device=settings.device, precision=settings.precision, base_model=base_model, merge=merge)
        return cls(loaded, settings.batch_size, compile=settings.compile)

    @property
    def label_names(self) -> list[str]:
        return self.run.label_names

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def precision(self) -> str:
        return self.run.precision

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to model.max_length."""
        _check_texts(texts)
        return tokenize(self.run.tokenizer, texts, self.max_length)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits [n, num_labels], float32, in input order."""
        ids = self.tokenize(texts)
        if not ids:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return self._scores(ids, compiled=self.compiled_for(len(ids)))

    def _scores(self, ids: Sequence[Sequence[int]], compiled: bool) -> np.ndarray:
        return run_inference(self.run.model, ids, self.batch_size, self.run.device, self.run.precision, self.pad_id,
                             compiled=compiled, max_length=self.max_length, merged=self.run.merged)


def _check_texts(texts: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too: it would be classified one character at a time.
    if isinstance(texts, (str, bytes)):
        raise TypeError("pass a list of texts, e.g. clf.predict([text]), not a single string")


def _renamed(old: bool | str | None, new: bool | str) -> bool | str:
    """`compile_setting=` still works, with a one-line notice: the knob is `compile` everywhere now."""
    if old is None:
        return new
    warnings.warn("Classifier: compile_setting= is now compile=; the old name will go", DeprecationWarning, stacklevel=3)
    return old
