"""One base exception; the CLI turns it into one `error: ...` line and exit status 2.

Anything that is not a LoraclfError is a bug and keeps its traceback.
"""


class LoraclfError(Exception):
    """A problem the user can fix: the message says what, where, and how."""


class ConfigError(LoraclfError):
    """A config file, key or value is wrong."""


class DataError(LoraclfError):
    """A data file or dataset cannot be used as given."""


class ModelError(LoraclfError):
    """A model or tokenizer cannot be loaded."""


class CheckpointError(LoraclfError):
    """A run directory or checkpoint is missing something or does not match."""


class RunDirError(LoraclfError):
    """A run directory cannot be created, overwritten or read."""


def one_line(err: BaseException) -> str:
    """An exception as one short line for a warning: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def brief(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to about `limit` characters, so an error message stays one short line whatever the
    user's value (a long list, a YAML alias bomb): a few items per level, three levels deep."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
