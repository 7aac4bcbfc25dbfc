"""ONNX Runtime on CPU: `OnnxClassifier`, the `Classifier` interface over an ONNX export.

    from loraclf.onnx_backend import OnnxClassifier
    clf = loraclf.backends.onnx_classifier("runs/default")        # a run: exported once into RUN/onnx, then reused
    clf = OnnxClassifier.from_export_dir("exports/news", int8=True)  # a `loraclf export RUN OUT --onnx --int8` directory
    clf.predict(["Stocks rally as rates fall"])                    # -> ["Business"]

Texts meet the same tokenizer call, length-sorted batches and padding as `Classifier`
(`loraclf.batching`), so both backends see identical token ids; only the forward pass differs.
An ONNX export directory holds:

    model.onnx           fp32 graph; inputs input_ids, attention_mask (int64 [batch, sequence]), output logits [batch, k]
    model.int8.onnx      the dynamically quantized copy (`--int8`)
    tokenizer/           the run's tokenizer; its tokenizer.json truncates at max_length, for plain `tokenizers`
    labels.json, config.yaml
    loraclf_export.json  kind "onnx", max_length, label_names, pad_id, opset, files, and the export's checks

An ONNX Runtime session may be called from several threads at once, so one OnnxClassifier can
back a server. Building the export is `loraclf.onnx_export`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .batching import inference_passes, pad_batch, pad_id_of, tokenize
from .errors import CheckpointError, ModelError
from .io import read_json
from .metrics import ScoresFromLogits
from .model import available_cores
from .rundir import EXPORT_INFO_FILE, TOKENIZER_DIR, RunDir

KIND = "onnx"  # loraclf_export.json "kind" of an ONNX export
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
DEFAULT_BATCH_SIZE = 64  # as Classifier: max(train.eval_batch_size, 64)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or a ModelError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("the ONNX backend needs onnxruntime, which is not installed; "
                         "pip install 'loraclf[onnx]' (or use --backend torch)") from None
    return onnxruntime


def session_options(threads: int | None = None) -> Any:
    """One intra-op thread per available core, no inter-op parallelism, sequential execution.

    A transformer encoder is a chain of big matmuls: parallelism inside an op pays, running ops
    side by side only adds threads that compete for the same cores.
    """
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    return opts


def load_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for the model file at `path`.

    Raises:
        ModelError: onnxruntime is missing, or the file does not load or lacks the expected inputs.
    """
    ort = import_onnxruntime()
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the ONNX model '{path}': {reason}; re-export it with `loraclf export RUN OUT --onnx`") from None
    names = {i.name for i in session.get_inputs()}
    if not set(INPUT_NAMES) <= names or OUTPUT_NAME not in {o.name for o in session.get_outputs()}:
        raise ModelError(f"the ONNX model '{path}' does not take {' and '.join(INPUT_NAMES)} and return {OUTPUT_NAME}; "
                         "export it with `loraclf export RUN OUT --onnx`")
    return session


def run_onnx_inference(
    session: Any,
    token_ids: Sequence[Sequence[int]],
    num_labels: int,
    batch_size: int,
    pad_id: int = 0,
    indices: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Logits (float32 [n, num_labels]) for `token_ids`, in input order: `inference.run_inference` on ONNX Runtime.

    Args:
        batch_size: rows per forward pass at most.
        indices: score only these rows; the result is in their order.
        max_tokens: padded tokens per forward pass at most (see `batching.inference_passes`).
    """
    rows = list(range(len(token_ids))) if indices is None else list(indices)
    out = np.zeros((len(rows), num_labels), dtype=np.float32)
    # ONNX Runtime runs fp32 on the CPU here, and is cut and padded as torch's fp32 CPU passes are.
    for width, pos in inference_passes([len(token_ids[i]) for i in rows], batch_size, "cpu", "fp32",
                                       max_tokens=max_tokens):
        batch = pad_batch([token_ids[rows[p]] for p in pos], pad_id, width=width)
        feeds = {name: batch[name].numpy() for name in INPUT_NAMES}
        out[pos] = session.run([OUTPUT_NAME], feeds)[0]
    return out


# ---------------------------------------------------------------------------------------------
# Export directories


def read_export_info(path: str | Path) -> dict[str, Any] | None:
    """The directory's loraclf_export.json if it describes an ONNX export, else None."""
    info_path = Path(path) / EXPORT_INFO_FILE
    if not info_path.is_file():
        return None
    try:
        info = read_json(info_path)
    except (OSError, ValueError):
        raise CheckpointError(f"'{info_path}' is unreadable; re-export with `loraclf export RUN OUT --onnx`") from None
    return info if isinstance(info, dict) and info.get("kind") == KIND else None


def check_onnx_export(path: str | Path, int8: bool = False) -> dict[str, Any]:
    """The export info of an ONNX export directory holding the model file to load.

    Raises:
        CheckpointError: not a directory, not an ONNX export, or a file missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"'{path}' does not exist; pass a run directory or the OUT of `loraclf export RUN OUT --onnx`")
    info = read_export_info(path)
    if info is None:
        raise CheckpointError(f"'{path}' is not an ONNX export (no {EXPORT_INFO_FILE} of kind onnx); "
                              "create one with `loraclf export RUN OUT --onnx`")
    needed = [INT8_FILE if int8 else ONNX_FILE, f"{TOKENIZER_DIR}/tokenizer_config.json"]
    for rel in needed:
        if not (path / rel).exists():
            redo = "--onnx --int8" if rel == INT8_FILE else "--onnx"
            raise CheckpointError(f"ONNX export '{path}' lacks {rel}; re-export with `loraclf export RUN OUT {redo}`")
    return info


def check_onnx_source(path: str | Path, int8: bool = False) -> RunDir:
    """`path` as the ONNX backend reads it: an ONNX export, or a finished run (exported on first use).

    Raises:
        ModelError: onnxruntime is not installed.
        CheckpointError: neither an ONNX export nor a finished run, or an export missing a file.
    """
    import_onnxruntime()
    path = Path(path)
    if read_export_info(path) is not None:
        check_onnx_export(path, int8)
        return RunDir(path)
    rd = RunDir(path)
    if path.is_dir() and not rd.adapter_dir.exists() and not rd.config_path.exists():
        raise CheckpointError(f"'{path}' is neither a loraclf run nor an ONNX export; pass the --out directory of "
                              "`loraclf train` or the OUT of `loraclf export RUN OUT --onnx`")
    return rd.check_loadable()


class OnnxClassifier(ScoresFromLogits):
    """An ONNX export ready to classify text: the interface of `inference.Classifier`, on ONNX Runtime (CPU)."""

    device = "cpu"

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        label_names: Sequence[str],
        max_length: int,
        batch_size: int | None = None,
        precision: str = "fp32",
        path: Path | None = None,
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self._label_names = list(label_names)
        self.max_length = max_length
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.precision = precision  # "fp32" or "int8"
        self.path = path
        self.pad_id = pad_id_of(tokenizer)

    @classmethod
    def from_export_dir(cls, path: str | Path, int8: bool = False, batch_size: int | None = None,
                        threads: int | None = None) -> "OnnxClassifier":
        """Load an ONNX export (`loraclf export RUN OUT --onnx`).

        Args:
            int8: load the quantized model.int8.onnx instead of model.onnx.
            batch_size: texts per forward pass (default: max(train.eval_batch_size, 64)).
            threads: intra-op threads (default: the cores this process may use).

        Raises:
            ModelError: onnxruntime missing, or a model or tokenizer that does not load.
            CheckpointError: not an ONNX export, or the model file is missing.
        """
        from .model import load_tokenizer

        import_onnxruntime()
        path = Path(path)
        info = check_onnx_export(path, int8)
        session = load_session(path / (INT8_FILE if int8 else ONNX_FILE), threads)
        names = [str(n) for n in info["label_names"]]
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(names):
            raise ModelError(f"the ONNX model in '{path}' returns {width} logits but labels.json names {len(names)} classes; re-export it")
        tokenizer = load_tokenizer(str(path / TOKENIZER_DIR))
        return cls(session, tokenizer, names, int(info["max_length"]), batch_size or default_batch_size(RunDir(path)),
                   "int8" if int8 else "fp32", path)

    @property
    def label_names(self) -> list[str]:
        return self._label_names

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to max_length (as `Classifier.tokenize`)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("pass a list of texts, e.g. clf.predict([text]), not a single string")
        return tokenize(self.tokenizer, texts, self.max_length)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits [n, num_labels], float32, in input order."""
        ids = self.tokenize(texts)
        return run_onnx_inference(self.session, ids, len(self.label_names), self.batch_size, self.pad_id)


def default_batch_size(rd: RunDir) -> int:
    if not rd.config_path.is_file():
        return DEFAULT_BATCH_SIZE
    return max(rd.read_config().train.eval_batch_size, DEFAULT_BATCH_SIZE)
