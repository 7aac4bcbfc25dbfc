"""Texts and labels from local files or the Hugging Face hub, split for training.

The package's modules, each owning one seam:

- `formats`: detecting a file's format, reading and decoding it (CSV, TSV, JSON lines, Parquet,
  plain text, the original AG News CSV) and taking texts from it (`detect_format`, `read_texts`);
- `labels`: label sets and mapping raw labels to ids (`TextLabels`, `AG_NEWS_LABELS`, `read_labeled`);
- `splits`: train/validation/test from files or the hub, seeded and stratified (`Splits`, `load_splits`);
- `settings`: checking the data settings and the command line's overrides (`data_config_for`);
- `_util`: one-line message pieces, cell values and label ids shared by the others.

Every problem a user can fix becomes one DataError line that names the file, row, value or
option involved and says what to do. The public names stay importable from `loraclf.data`.
"""
from ..config import DataConfig
from .formats import detect_format, read_table, read_texts
from .labels import AG_NEWS_LABELS, TextLabels, label_warnings, read_labeled
from .settings import data_config_for
from .splits import Splits, load_splits

__all__ = [
    "AG_NEWS_LABELS",
    "DataConfig",
    "Splits",
    "TextLabels",
    "data_config_for",
    "detect_format",
    "label_warnings",
    "load_splits",
    "read_labeled",
    "read_table",
    "read_texts",
]
