"""Atomic writes: a reader never sees a half-written file, a crash never loses the last good one."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling (torch's writer re-raises the OSError
    as a RuntimeError; shutil.copytree and safetensors keep only its text), is a full disk or quota."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        if (not isinstance(exc, OSError) or exc.errno is None) and any(os.strerror(n) in str(exc) for n in DISK_FULL):
            return True  # shutil.Error, safetensors' and torch's writers carry it as text
        # `raise ... from None` (a message already made of it) ends the chain
        exc, seen = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__), seen + 1
    return False


def disk_full_error(path: str | os.PathLike) -> Exception:
    """The one-line error for a write to `path` that found the disk full."""
    from .errors import RunDirError

    return RunDirError(f"the disk is full: no space left to write '{path}' (nothing half-written was kept); "
                       "free some space and run the command again (a stopped `loraclf train` continues with --resume)")


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk while writing `path` into `disk_full_error`; other errors pass."""
    try:
        yield
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(path) from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file beside `path`; on success fsync it and `os.replace` it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, Exception) and is_disk_full(e):
            raise disk_full_error(path) from None
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        yaml.safe_dump(obj, f, sort_keys=False)


def _usual_modes(root: Path) -> None:
    """Give the files under `root` the permissions of any file the user creates (0666 & ~umask).

    Writers such as safetensors create their files 0600; a directory that is moved into place
    whole should look as if the user had written it. Executable files keep an execute bit (0777
    & ~umask); symlinks are left alone.
    """
    mask = _umask()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, (0o777 if st.st_mode & 0o111 else 0o666) & ~mask)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory at `<path>.tmp-*` and move it onto `path` only when the block succeeds.

    An existing `path` is replaced (moved aside first, removed after), so readers see the old or
    the new directory, never a mix. Its files get the usual permissions (0666 & ~umask), whatever
    mode the code that wrote them chose.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _usual_modes(tmp)
        replace_dir(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and is_disk_full(e):
            raise disk_full_error(path) from None
        raise


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished directory `new` onto `target`: the old `target` is moved aside first and removed
    only after the rename, so a crash leaves the old or the new directory, never neither."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output_dir(path: str | os.PathLike, option: str) -> None:
    """Raise RunDirError unless a directory can be created (or written) at `path`: one line naming `option`.

    Checked before any model loads, so a bad output path costs nothing.
    """
    from .errors import RunDirError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{option} '{path}' is a file, not a directory; give a directory path")
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"{option} '{path}' lies under the file '{ancestor}'; give a path inside a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"{option} '{path}': cannot write in '{ancestor}' (permission denied); choose a writable place")


def os_error_reason(e: OSError) -> str:
    """An OSError as a few words for a one-line message ("Permission denied", "No space left on device")."""
    return " ".join(str(e.strerror or e).split())


class DirLock:
    """An exclusive lock on the directory `path` (which need not exist yet), held by this process until
    `release()`: the file `.<name>.lock` beside it, flock'ed. Two writers of one run would interleave or delete
    each other's files; the second one is refused instead of waiting.

    The lock file is removed on release. A process that opened it just before can then lock a file that is no
    longer linked, so `acquire` checks that the file it locked is still the one at the path, and retries if not.
    Parent directories it had to create are removed again on release if still empty.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path).expanduser().absolute()
        self.path = path
        self.lock_path = path.parent / f".{path.name}.lock"
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self, what: str = "run directory") -> "DirLock":
        """Take the lock, or raise RunDirError naming the process that holds it."""
        import fcntl

        from .errors import RunDirError

        if self._fd is not None:
            return self
        missing = [p for p in [self.lock_path.parent, *self.lock_path.parent.parents] if not p.exists()]
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing  # deepest first: rmdir order
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                self._remove_made()
                raise RunDirError(f"{what} '{self.path}' is in use by another loraclf process (pid {holder}, lock "
                                  f"{self.lock_path.name}); wait for it to finish, or choose another directory") from None
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a file its holder had just removed: lock the one at the path now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_path)  # while still holding it: see the class docstring
        os.close(self._fd)
        self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for p in self._made:
            with contextlib.suppress(OSError):
                p.rmdir()
        self._made = []

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
