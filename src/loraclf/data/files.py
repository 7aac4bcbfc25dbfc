"""Data files as bytes: is the path a readable file, is it text at all, and its UTF-8 decoding.

Owns the checks that run before any parsing: a missing path, a directory, a broken link; a binary
file handed over by mistake (gzip, PNG, Parquet named .csv, UTF-16), told apart by its leading bytes;
and decoding, each problem one DataError line naming the option of the command that ran.
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from ..errors import DataError
from ._util import _ROLES, _check_option, _listing, _one_line, _setting, _source

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".parquet": "parquet", ".pq": "parquet", ".txt": "txt"}
_SNIFF_BYTES = 1 << 16  # bytes read to sniff a file's kind

# Leading bytes of files people hand over by mistake: what the file is, and what to do instead.
_MAGIC = [
    (b"\x1f\x8b", "gzip-compressed data", "decompress it first (gunzip)"),
    (b"PK\x03\x04", "a ZIP archive, such as an Excel .xlsx workbook", "save the sheet as CSV UTF-8, or unzip it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document, such as an Excel .xls workbook",
     "save the sheet as CSV UTF-8"),
    (b"BZh", "bzip2-compressed data", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (unxz)"),
    (b"(\xb5/\xfd", "zstd-compressed data", "decompress it first (unzstd)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract it first"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV"),
    (b"ARROW1", "an Arrow/Feather file", "save it as Parquet"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", None),
    (b"\xff\xd8\xff", "a JPEG image", None),
    (b"GIF8", "a GIF image", None),
    (b"%PDF", "a PDF document", None),
    (b"\x7fELF", "a program (ELF executable)", None),
]


def _check_path(path: str, role: str) -> None:
    """Raise one line saying what `path` is when it is not a readable file: missing, a directory, ..."""
    src, check = _source(path, role), _check_option(role)
    if not path:
        raise DataError(f"the {_ROLES[role].noun} path is empty; {check}")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise DataError(f"{src} is a broken symbolic link (to '{os.readlink(path)}'); {check}") from None
        # The first part of the path that exists: a file there means "a file where a directory is expected".
        part = Path(path).parent
        while not os.path.lexists(part) and part != part.parent:
            part = part.parent
        if os.path.lexists(part) and not part.is_dir():
            raise DataError(f"{src} cannot exist: '{part}' is a file, not a directory; {check}") from None
        raise DataError(f"{src} does not exist; {check}") from None
    except OSError as e:  # permission denied on a directory on the way, a loop of links...
        raise DataError(f"cannot reach {src} ({_one_line(e.strerror or e)}); {check}") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            files = sorted(n for n in os.listdir(path) if Path(n).suffix.lower() in _EXTENSIONS)
        except OSError:
            files = []
        option = _ROLES[role].option
        fix = (f"data files in it: {_listing(files, 5)}; give one of them{' to ' + option if option else ''}" if files
               else check)
        raise DataError(f"{src} is a directory, not a file; {fix}")
    if stat.S_ISSOCK(st.st_mode):
        raise DataError(f"{src} is a socket, not a file; {check}")
    if not stat.S_ISREG(st.st_mode):
        # A named pipe (or a device) can be read only once, and its kind is judged from a first read.
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a device"
        stdin = "; to stream data in, pipe it to standard input with `-i -` (and --format)" if role == "input" else ""
        raise DataError(f"{src} is {kind}, not a regular file; {check}{stdin}")


def _read_bytes(path: str, role: str) -> bytes:
    """The bytes of `path` (stdin for "-"); callers have checked the path with `_detect`."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {_source(path, role)} ({_one_line(e.strerror or e)}); check its permissions") from e


def _accepted(role: str) -> str:
    """The files `role`'s command reads."""
    return ("a UTF-8 CSV, TSV, JSON lines or plain text file, or a Parquet file" if role == "input"
            else "a UTF-8 CSV, TSV or JSON lines file, or a Parquet file")


def _utf8_prefix(head: bytes) -> bool:
    """True when `head` (the start of a file) is valid UTF-8, allowing a character cut off at its end."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.reason == "unexpected end of data" and e.start >= len(head) - 3
    return True


def _not_text(data: bytes, src: str, role: str) -> str | None:
    """The message for bytes that are not UTF-8 text (compressed, an image, UTF-16...), else None."""
    head = data[:_SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (
            len(head) >= 8 and head[1::2].count(0) >= 0.4 * len(head[1::2]) > head[0::2].count(0)):
        return f"{src} is UTF-16 text; re-save it as UTF-8 (in Excel: Save As \"CSV UTF-8\")"
    controls = sum(b < 32 and b not in b"\t\n\r\x0c" for b in head) > 0.05 * len(head)  # text has few
    if b"\x00" not in head and not controls and _utf8_prefix(head):
        return None  # text, perhaps with a bad byte further on: _decode names it
    if head.startswith(b"PAR1"):
        return (f"{src} is not a text file (it looks like a Parquet file); give it a .parquet name, "
                f"or {_setting(role, 'format', 'parquet')}")
    kind, fix = next(((k, f) for magic, k, f in _MAGIC if head.startswith(magic)), (None, None))
    if kind is None:
        if b"\x00" not in head and not controls:
            return None  # text in another encoding (Latin-1, cp1252): _decode says to re-save it as UTF-8
        kind = "binary data"
    accepted = _accepted(role)
    return f"{src} is not a text file (it looks like {kind}); " + (f"{fix}; it must be {accepted}" if fix
                                                                  else f"give {accepted}")


def _decode(data: bytes, src: str, role: str) -> str:
    problem = _not_text(data, src, role)
    if problem:
        raise DataError(problem)
    # Decoding ourselves (not inside pandas) gives the exact byte offset of the first bad byte.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{src} is not valid UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start}); "
                        "re-save it as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a BOM would stick to the first column name


