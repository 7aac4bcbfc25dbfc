"""A trained run as an ONNX export directory (layout: `loraclf.onnx_backend`), checked against PyTorch.

`write_onnx_export(run, dir)` loads the run on CPU in fp32, scores a sample of texts with it
(the reference), merges LoRA into the base (head kept), exports the merged model with
`torch.onnx.export` (the dynamo exporter, dynamic batch and sequence axes), rewrites the graph with
onnxruntime's fused CPU kernels (`fuse_for_onnxruntime`: Attention, SkipLayerNormalization, BiasGelu),
saves the tokenizer, labels and config, and optionally a dynamically quantized int8 copy
(`onnxruntime.quantization.quantize_dynamic`). It then scores the same sample through
`OnnxClassifier` (the same tokenizer and batches) and fails unless the fp32 logits are within
1e-4 of PyTorch's; for int8 it records how often its labels agree with fp32. `loraclf export
--onnx` and the run-directory cache of `--backend onnx` (`ensure_onnx_cache`) both use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import DataError, ModelError, RunDirError
from .io import atomic_dir, write_json
from .onnx_backend import (INPUT_NAMES, INT8_FILE, KIND, ONNX_FILE, OUTPUT_NAME, OnnxClassifier, import_onnxruntime,
                           load_session, read_export_info)
from .rundir import CONFIG_FILE, EXPORT_INFO_FILE, LABELS_FILE, TOKENIZER_DIR, RunDir

LOGIT_TOLERANCE = 1e-4  # max |fp32 ONNX logit - PyTorch logit| on the sample: float32 reordering, not a mistranslation
SAMPLE_SIZE = 64  # texts in the export's self-check (plus an empty and an over-long one)
CHECK_BATCH_SIZE = 16  # several batches of different widths: the dynamic axes get exercised
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps one file at 2 GB: bigger weights go to model.onnx.data
FOLD_LIMIT = 1 << 28  # elements: constant folding may build any weight (the fused QKV matrix), not only small tensors
UNFUSED_FILE = "model.unfused.onnx"  # the exporter's graph, deleted once fused into model.onnx
# int8: onnxruntime's dynamic quantization, weights int8 per output channel, activations uint8 per
# tensor at run time. Measured on the fused MiniLM default run (label agreement with fp32 ONNX,
# accuracy change). Every 4th AG News test row (1,900): all MatMuls + embedding Gather 98.95% (-0.32
# points); MatMuls only 99.11% (+0.21); the fused Attention as QAttention (onnxruntime forces 7-bit
# weights there) 95.2% (-1.6), so Attention (the QKV projection) stays fp32. All 7,600 rows:
# MatMuls with the FFN output projections (fed by GELU, the widest activations) in fp32 99.47%
# (-0.01); that plus the first layer in fp32 99.50% (-0.06); plus the last layer in fp32 99.51%
# (+0.06), the recipe below (37 of 7,600 labels differ; the bar is 38). Its speed against fp32 ONNX and
# torch bf16 is in bench/FINDINGS_cpu.md.
# The embedding tables (Gather) are int8 too: they are half of a small model's bytes and cost no agreement worth
# the name (bench/FINDINGS_cpu.md, "ONNX int8 embeddings"); the fused Attention stays fp32 (see above).
# "op_types" get int8 weights; "fp32_roles" name nodes kept in fp32 (`int8_fp32_nodes`).
QUANTIZATION: dict[str, Any] = {"weight_type": "QInt8", "per_channel": True, "op_types": ["MatMul", "Gather"],
                                "fp32_roles": ["ffn_down", "last_layer"]}
# What an export is made of beyond the run and the int8 recipe; a change makes every RUN/onnx cache stale.
EXPORT_RECIPE = "dynamo export, fused for onnxruntime (2)"

FALLBACK_TEXTS = [
    "Stocks rallied on Wall Street as bond yields fell after the central bank held rates.",
    "The home side scored twice in stoppage time to win the cup final.",
    "Researchers unveiled a chip that trains neural networks with a tenth of the power.",
    "Ministers met in Geneva to discuss a ceasefire and humanitarian corridors.",
    "Quarterly profit beat forecasts, sending the retailer's shares up 8 percent.",
    "The probe sent back the first close-up images of the comet's surface.",
    "A late goal sealed the title for the champions.",
    "Oil prices climbed as supply worries grew.",
    "New smartphone software update fixes security flaws.",
    "Election results were contested by the opposition party.",
]


def check_export_tools() -> None:
    """Raise ModelError (one line, with the install command) unless onnx, onnxscript and onnxruntime import."""
    import_onnxruntime()
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise ModelError(f"exporting to ONNX needs {module}, which is not installed; pip install 'loraclf[onnx]'") from None


def source_fingerprint(run: RunDir) -> str:
    """A hash of what the export depends on: adapter files, labels, the model settings and the int8 recipe."""
    cfg = run.read_config()
    h = hashlib.sha256(f"{cfg.model.name}\0{cfg.model.max_length}\0{sorted(QUANTIZATION.items())}\0{EXPORT_RECIPE}\0".encode())
    for p in sorted(run.adapter_dir.rglob("*")) + [run.labels_path]:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def sample_texts(run: RunDir, n: int = SAMPLE_SIZE) -> list[str]:
    """Texts for the self-check: evenly spaced rows of the run's local test, validation or training file
    (the first that reads), else a fixed set; plus an empty text and one past model.max_length."""
    from .data import data_config_for, read_texts

    cfg = run.read_config()
    texts: list[str] = []
    for path in (cfg.data.test_file, cfg.data.validation_file, cfg.data.train_file):
        if path and Path(path).is_file():
            try:
                texts = read_texts(str(path), data_config_for(cfg.data))
            except DataError:
                continue
            if texts:
                break
    if texts:
        texts = [texts[int(i)] for i in np.unique(np.linspace(0, len(texts) - 1, n).astype(int))]
    else:
        texts = list(FALLBACK_TEXTS)
    return texts + ["", " ".join(["the market rallied"] * cfg.model.max_length)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporter prints progress lines and warns about optional torchvision ops; quantization asks
    # for pre-processing it does not need here. A failure still raises (and is reported in one line).
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export_graph(model: Any, example: dict[str, Any], path: Path) -> None:
    import torch

    class LogitsOnly(torch.nn.Module):  # named inputs in, the logits tensor out (not a ModelOutput)
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    try:
        with _quiet():
            torch.onnx.export(
                LogitsOnly(model).eval(), tuple(example[n] for n in INPUT_NAMES), str(path),
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_shapes={n: {0: batch, 1: seq} for n in INPUT_NAMES},
                dynamo=True, external_data=big, verbose=False,
            )
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"torch.onnx.export failed for this model ({type(e).__name__}: {reason}); "
                         "export a merged transformers model with `loraclf export RUN OUT --merged` instead") from None


def fuse_for_onnxruntime(src: Path, dst: Path) -> dict[str, int]:
    """Write `src` to `dst` with its subgraphs replaced by onnxruntime's fused CPU kernels; returns fusion counts.

    Self-attention becomes one com.microsoft Attention op (QKV projection, masked softmax, context),
    the residual add + LayerNorm SkipLayerNormalization, the FFN bias + GELU BiasGelu. The fused graph ran
    faster than the unfused one (bench/reports/onnx_fusion_xeon_amx.md).
    onnxscript's `optimize_for_ort` is used rather than `onnxruntime.transformers.optimizer`: the latter
    matches the TorchScript exporter's attention pattern, and on this dynamo export it fused only
    SkipLayerNormalization and BiasGelu (no Attention, ~1.06x). The export's self-check then holds
    the fused graph to PyTorch's logits like any other.
    """
    import onnx_ir as ir
    from onnxscript.optimizer import fold_constants
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(str(src))
    model, counts = optimize_for_ort(model)
    # The fused Attention gets its QKV weight as a Concat of the three projections: fold it into one
    # initializer, so int8 quantization sees a constant weight (QAttention) instead of a runtime Concat.
    fold_constants(model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    for node in model.graph:
        sizes = node.attributes.get("qkv_hidden_sizes") if node.op_type == "Attention" else None
        if sizes is not None and len(set(sizes.as_ints())) == 1:
            # Equal Q/K/V widths are the op's default; quantize_dynamic leaves an Attention with this attribute in fp32.
            del node.attributes["qkv_hidden_sizes"]
    big = any(src.parent.glob(f"{src.name}.data"))
    ir.save(model, str(dst), external_data=f"{dst.name}.data" if big else None)
    return {name: int(n) for name, n in counts.items() if n}


def _save_tokenizer(tokenizer: Any, max_length: int, out: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer.model_max_length = max_length  # where `truncation=True` cuts, as in training
    tokenizer.save_pretrained(str(out))
    path = out / "tokenizer.json"
    if not path.is_file():
        raise ModelError("the run's tokenizer has no fast (tokenizers) form, so an ONNX export cannot ship a tokenizer.json; "
                         "use `loraclf export RUN OUT --merged`")
    # Plain `tokenizers` then cuts where loraclf does: Tokenizer.from_file(...).encode_batch(texts).
    plain = Tokenizer.from_file(str(path))
    plain.no_padding()
    plain.enable_truncation(max_length)
    plain.save(str(path))


def _fuse(src: Path, dst: Path) -> dict[str, int] | str:
    """`fuse_for_onnxruntime(src, dst)`, then `src` deleted; a graph the fuser cannot handle is kept as it is.

    Returns the fusion counts, or (not fused) the reason: the export still works, only slower.
    """
    try:
        with _quiet():
            fusions: dict[str, int] | str = fuse_for_onnxruntime(src, dst)
    except Exception as e:  # a rewriter bug on an unusual architecture must not cost the export
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        fusions = f"not fused ({type(e).__name__}: {reason})"
        for p in dst.parent.glob(f"{dst.name}*"):
            p.unlink()
        src.rename(dst)  # an external data file keeps its name: the graph refers to it by name
        return fusions
    for p in src.parent.glob(f"{src.name}*"):
        p.unlink()
    return fusions


# Node roles the int8 recipe may keep in fp32, found in the fused graph: "ffn_down", a MatMul fed by one of these
# ops (the FFN output projection: GELU output, the widest range); "last_layer", every MatMul after the last
# Attention (the last encoder layer, next to the head).
FP32_ROLES = {"ffn_down": ("BiasGelu", "Gelu", "FastGelu"), "last_layer": ("Attention",)}


def int8_fp32_nodes(path: Path, roles: Sequence[str]) -> list[str]:
    """Names of the MatMul nodes of the ONNX model at `path` that `roles` (keys of FP32_ROLES) keep in fp32."""
    import onnx

    if not roles:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph  # nodes in topological order (an ONNX rule)
    producer = {out: node.op_type for node in graph.node for out in node.output}
    names: set[str] = set()
    if "ffn_down" in roles:
        names |= {n.name for n in graph.node if n.op_type == "MatMul" and producer.get(n.input[0]) in FP32_ROLES["ffn_down"]}
    if "last_layer" in roles:
        last = max((i for i, n in enumerate(graph.node) if n.op_type in FP32_ROLES["last_layer"]), default=len(graph.node))
        names |= {n.name for n in graph.node[last:] if n.op_type == "MatMul"}
    return [n.name for n in graph.node if n.name in names]


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    big = any(src.parent.glob(f"{src.name}.data"))
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType[QUANTIZATION["weight_type"]],
                         per_channel=QUANTIZATION["per_channel"], op_types_to_quantize=list(QUANTIZATION["op_types"]),
                         nodes_to_exclude=int8_fp32_nodes(src, QUANTIZATION["fp32_roles"]), use_external_data_format=big)


def _model_bytes(path: Path) -> int:
    """An ONNX model's size on disk, its external data file included."""
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*") if p.name in (path.name, f"{path.name}.data"))


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _write_int8(out: Path, tokenizer: Any, label_names: list[str], max_length: int, sample: list[str],
                fp32_logits: np.ndarray) -> dict[str, Any]:
    """Quantize out/model.onnx to the int8 model beside it; returns its check entries against the fp32 logits."""
    _quantize(out / ONNX_FILE, out / INT8_FILE)
    q = OnnxClassifier(load_session(out / INT8_FILE), tokenizer, label_names, max_length, CHECK_BATCH_SIZE, "int8")
    q_logits = q.logits(sample)
    return {"int8_label_agreement": float(np.mean(q_logits.argmax(1) == fp32_logits.argmax(1))),
            "int8_max_abs_logit_diff": float(np.abs(q_logits - fp32_logits).max()),
            "fp32_bytes": _model_bytes(out / ONNX_FILE), "int8_bytes": _model_bytes(out / INT8_FILE),
            "int8_quantization": {"method": "onnxruntime.quantization.quantize_dynamic", **QUANTIZATION}}


def write_onnx_export(run: RunDir, out: Path, int8: bool = False, texts: Sequence[str] | None = None,
                      tolerance: float = LOGIT_TOLERANCE) -> dict[str, Any]:
    """Write an ONNX export of `run` into the (new, empty) directory `out`; callers make it atomic.

    Args:
        run: a finished run.
        out: the directory to fill (e.g. the temporary directory of `io.atomic_dir`).
        int8: add model.int8.onnx, dynamically quantized.
        texts: the self-check sample (default: `sample_texts(run)`).
        tolerance: the largest |fp32 ONNX logit - PyTorch logit| accepted.

    Returns:
        The export info written to loraclf_export.json (its "check" holds the comparison).

    Raises:
        ModelError: the exporter or onnxruntime is missing, the export fails, or its logits differ from PyTorch's.
        CheckpointError: `run` is not a finished run.
    """
    import torch

    from .batching import pad_batch, pad_id_of, tokenize
    from .inference import Classifier
    from .model import load_tokenizer

    check_export_tools()
    run.check_loadable()
    cfg = run.read_config()
    sample = list(texts) if texts is not None else sample_texts(run)
    loaded = run.load(device="cpu", precision="fp32")
    max_length = cfg.model.max_length
    # The reference is the run itself (base + adapter, fp32), before merge_and_unload changes the weights.
    reference = Classifier(loaded, batch_size=CHECK_BATCH_SIZE).logits(sample)
    merged = loaded.model.merge_and_unload().eval()
    ids = sorted(tokenize(loaded.tokenizer, sample[:8], max_length), key=len)
    example = pad_batch([ids[0], ids[-1]], pad_id_of(loaded.tokenizer))  # batch 2, two lengths: nothing specializes to 1
    _export_graph(merged, example, out / UNFUSED_FILE)
    fusions = _fuse(out / UNFUSED_FILE, out / ONNX_FILE)
    _save_tokenizer(loaded.tokenizer, max_length, out / TOKENIZER_DIR)
    RunDir(out).write_labels(loaded.label_names)
    shutil.copy2(run.config_path, out / CONFIG_FILE)

    tokenizer = load_tokenizer(str(out / TOKENIZER_DIR))  # the saved one: what every later load gets
    fp32 = OnnxClassifier(load_session(out / ONNX_FILE), tokenizer, loaded.label_names, max_length, CHECK_BATCH_SIZE)
    logits = fp32.logits(sample)
    diff = float(np.abs(logits - reference).max())
    if not diff <= tolerance:  # also catches NaN
        raise ModelError(f"ONNX export check failed: fp32 logits differ from PyTorch by up to {diff:.2e} (limit {tolerance:g}) "
                         f"on {len(sample)} sample texts; use `loraclf export RUN OUT --merged` instead")
    check: dict[str, Any] = {"sample_texts": len(sample), "tolerance": tolerance, "fp32_max_abs_logit_diff": diff,
                             "fp32_label_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
                             "fusions": fusions}
    files = {"fp32": ONNX_FILE, "tokenizer": f"{TOKENIZER_DIR}/tokenizer.json", "labels": LABELS_FILE, "config": CONFIG_FILE}
    if int8:
        check.update(_write_int8(out, tokenizer, loaded.label_names, max_length, sample, logits))
        files["int8"] = INT8_FILE
    import onnxruntime

    info = {
        "kind": KIND,
        "source_run": str(run.path.resolve()),
        "source_fingerprint": source_fingerprint(run),
        "base_model": cfg.model.name,
        "max_length": max_length,
        "label_names": loaded.label_names,
        "pad_id": pad_id_of(tokenizer),
        "inputs": list(INPUT_NAMES),
        "outputs": [OUTPUT_NAME],
        "opset": _opset(out / ONNX_FILE),
        "files": files,
        "check": check,
        "exporter": f"torch.onnx.export (dynamo), torch {torch.__version__}",
        "onnxruntime": onnxruntime.__version__,
    }
    write_json(out / EXPORT_INFO_FILE, info)  # last: its presence means the export is complete
    return info


def ensure_onnx_cache(run: RunDir, int8: bool = False) -> Path:
    """RUN/onnx, exported now if missing, stale (the adapter changed) or lacking the int8 model; returns its path.

    Raises:
        RunDirError: the run directory is not writable (export it elsewhere with `loraclf export RUN OUT --onnx`).
        ModelError: see `write_onnx_export`.
    """
    cache = run.onnx_dir
    info = read_export_info(cache) if cache.is_dir() else None
    fresh = info is not None and info.get("source_fingerprint") == source_fingerprint(run)
    if fresh and (cache / ONNX_FILE).is_file() and (not int8 or (cache / INT8_FILE).is_file()):
        return cache
    want_int8 = int8 or bool(fresh and info and "int8" in info.get("files", {}))
    print(f"note: exporting '{run.path}' to ONNX{' (+int8)' if want_int8 else ''} once; cached in '{cache}'", file=sys.stderr)
    try:
        with atomic_dir(cache) as tmp:
            write_onnx_export(run, tmp, int8=want_int8)
    except OSError as e:
        raise RunDirError(f"cannot write the ONNX cache '{cache}' ({type(e).__name__}: {e.strerror or e}); "
                          "export once with `loraclf export RUN OUT --onnx` and pass OUT instead") from None
    return cache

