"""Command-line options generated from a settings dataclass: one option per field, its help and default included."""
from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from typing import Any, Callable, Optional

import typer


def _option_type(tp: Any) -> Any:
    """The type typer parses for a dataclass field's type.

    Literal choices are parsed as plain strings and checked by the dataclass, so a bad value gets the same
    one-line `error:` as every other bad setting rather than Click's usage message.
    """
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if optional:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is typing.Literal:
        tp = str
    return Optional[tp] if optional else tp


def options_from(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: give a command taking `**options` one option per field of the dataclass `cls`.

    `max_queue: int = 256` with `metadata["help"]` becomes `--max-queue INTEGER [default: 256]` with that help;
    a bool becomes `--name/--no-name`; a field with `metadata["env"]` becomes `--name-env VAR`, the name of
    an environment variable holding the value (read by `from_options`), so secrets stay out of `ps`.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        field_types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, metavar = _option_type(field_types[f.name]), None
            flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            name, decls = f.name, [flag]
            if f.metadata.get("env"):
                name, tp, default, decls, metavar = f"{f.name}_env", Optional[str], None, [f"{flag}-env"], "VAR"
                help_text = f"Names the environment variable that holds this value: {help_text}"
            elif tp is bool:
                decls = [f"{flag}/--no-{flag[2:]}"]
            option = typer.Option(default, *decls, help=help_text, metavar=metavar)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))
        fn.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        fn.__annotations__ = {**{p.name: p.annotation for p in params}, "return": None}
        return fn

    return decorate


def from_options(cls: type, options: dict[str, Any]) -> Any:
    """The dataclass `cls` built from the options `options_from(cls)` added (`--name-env VAR` read from the environment).

    Raises:
        ConfigError: a named environment variable is unset or empty, or the dataclass refuses a value.
    """
    from ..errors import ConfigError

    values = dict(options)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("env"):
            continue
        var = values.pop(f"{f.name}_env")
        if var is None:
            continue
        values[f.name] = os.environ.get(var)
        if not values[f.name]:
            what = f.name.replace("_", " ")
            raise ConfigError(f"--{f.name.replace('_', '-')}-env {var}: that environment variable is unset or empty; export the {what} in it")
    return cls(**values)
