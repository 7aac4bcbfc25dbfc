"""Loading a config: YAML file -> `key=value` overrides -> pydantic validation -> one ConfigError.

Every problem (unknown key, wrong type, out of range, NaN, cross-field) is gathered into one
ConfigError on one line: `config has errors: A; B; C` (a single problem alone is just itself).
Each problem names the dotted field, the bad value and the fix.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from ..errors import ConfigError, brief
from .schema import SECTIONS, Config, constraints, field_at

# What people type from other tools (HF TrainingArguments, PEFT) -> our field in the same section.
ALIASES = {
    "learning_rate": "lr", "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
    "num_epochs": "epochs", "num_train_epochs": "epochs", "n_epochs": "epochs",
    "gradient_accumulation_steps": "grad_accum", "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size", "lr_scheduler_type": "scheduler", "warmup": "warmup_steps",
    "max_seq_length": "max_length", "model_name": "name", "model_name_or_path": "name", "n_trials": "trials",
    "text_column": "text_columns", "labels": "label_names",
}

TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
}


@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(Config)


# ---------------------------------------------------------------------------------------------
# pydantic errors -> our one-line problems


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "config"


def _keys(section: str) -> list[str]:
    """The field names of a section ('' is the top level)."""
    cls = SECTIONS.get(section) if section else Config
    return [f.name for f in dataclasses.fields(cls)] if cls else []


def did_you_mean(section: str, key: str) -> str | None:
    """The dotted field the user probably meant by the unknown `key` in `section` ('' for the top level)."""
    prefix = f"{section}." if section else ""
    leaf = ALIASES.get(key, key)
    if leaf != key and leaf in _keys(section):
        return prefix + leaf
    for other in SECTIONS:  # the right key in the wrong section: train.dropout -> lora.dropout
        if other != section and leaf in _keys(other):
            return f"{other}.{leaf}"
    close = difflib.get_close_matches(key, _keys(section), n=1, cutoff=0.6)
    return prefix + close[0] if close else None


def _range_fix(bounds: dict[str, Any]) -> tuple[str, str]:
    """(what is wrong, the fix) for a value outside `bounds` ({'ge': 1}, {'gt': 0, 'le': 1}, ...)."""
    lo = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds else None
    hi = (")", bounds["lt"]) if "lt" in bounds else ("]", bounds["le"]) if "le" in bounds else None
    if lo and hi:
        return "is out of range", f"use a value in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return "is too small", f"use at least {lo[1]:g}" if lo[0] == "[" else f"use a value above {lo[1]:g}"
    if hi:
        return "is too large", f"use at most {hi[1]:g}" if hi[0] == "]" else f"use a value below {hi[1]:g}"
    return "is out of range", "give a finite number"


def describe_error(err: dict[str, Any]) -> list[str]:
    """One pydantic error as our problem line(s)."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    where = _where(loc)
    names = [p for p in loc if isinstance(p, str)]
    found = field_at(".".join(names)) if names else None
    meta = found[1].metadata if found else {}
    hint = f" ({meta['hint']})" if meta.get("hint") else ""
    if kind == "loraclf_problems":
        return list(err["ctx"]["problems"])
    if kind == "loraclf":
        return [f"{where}: {err['ctx']['text']}"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden", "invalid_key"):
        section, key = ".".join(map(str, loc[:-1])), str(loc[-1])
        where = f"{section}.{key}" if section else key
        valid = ", ".join(_keys(section))
        guess = did_you_mean(section, key)
        return [f"{where}: unknown key; valid keys{' in ' + section if section else ''}: {valid}"
                + (f" (did you mean `{guess}`?)" if guess else "")]
    if kind in ("dataclass_type", "dataclass_args_type", "model_type"):
        return [f"{where}: expected a mapping of keys, got {brief(value)}"]
    if kind in TYPE_NAMES:
        return [f"{where}: {brief(value)} has the wrong type; expected {TYPE_NAMES[kind]}"]
    bounds, choices = constraints(found[0], found[1].name) if found else ({}, ())
    what, fix = _range_fix(bounds)
    if kind == "finite_number":
        return [f"{where}: {brief(value)} is not a finite number (NaN and infinity are refused); {fix}{hint}"]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [f"{where}: {brief(value)} {what}; {fix}{hint}"]
    if kind == "literal_error":
        return [f"{where}: {brief(value)} is not an option; use one of {', '.join(map(str, choices))}"]
    if kind in ("too_short", "string_too_short"):
        return [f"{where}: is empty; {meta.get('empty', 'give at least one value')}"]
    return [f"{where}: {brief(value)} is not valid ({err['msg']})"]


def describe_errors(e: ValidationError) -> list[str]:
    out: list[str] = []
    for err in e.errors(include_url=False):
        out.extend(describe_error(err))
    return out


# ---------------------------------------------------------------------------------------------
# YAML and overrides


# A config is a few hundred values: far beyond these it is a mistake or an attack (a "billion laughs" alias bomb
# expands 9 levels of aliases to 10^9 values, and deep nesting overflows Python's recursion).
MAX_YAML_NODES = 10_000  # values after expanding aliases
MAX_YAML_DEPTH = 32  # nested lists/mappings
MAX_PROBLEMS = 8  # listed in one error line; the rest are counted


class YamlLimitError(yaml.YAMLError):
    """A YAML document that is too big once expanded, too deep, or repeats a key; `problem` says which."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values under `node` with every alias expanded, counted once per node (memo) so a bomb costs no time."""
    if id(node) not in memo:
        memo[id(node)] = 1  # a self-referencing alias counts once instead of looping
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in children)
    return memo[id(node)]


class ConfigYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans and floats: only true/false (any case) are booleans, where
    YAML 1.1 also takes yes/no/on/off/y/n (so `model.name=yes` or a column named `on` became a bool), and `2e-5`
    is a float (YAML 1.1 wants a dot in the mantissa and reads it as a string).

    It also refuses what no config needs: more than MAX_YAML_NODES values once aliases are expanded, nesting
    deeper than MAX_YAML_DEPTH, and a key given twice in one mapping (the second silently replaced the first,
    a whole section at a time)."""

    _depth = 0
    _expanded = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
            self._expanded += _expanded_size(self.anchors[event.anchor], self._sizes)
        else:
            self._expanded += 1
        if self._expanded > MAX_YAML_NODES:
            raise YamlLimitError(f"it expands to more than {MAX_YAML_NODES:,} values (aliases included); write "
                                 "the values out rather than aliases of aliases", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"it nests deeper than {MAX_YAML_DEPTH} levels; a config needs a few", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        self._sizes: dict[int, int] = {}
        return super().compose_document()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise YamlLimitError(f"the key '{brief(key_node.value, 40)[1:-1]}' is given twice in one mapping "
                                         "(the second would replace the first); merge them into one", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
ConfigYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigYamlLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# Appended after the int resolver, so "3" stays an int; ".inf" and ".nan" stay floats (validation refuses NaN).
ConfigYamlLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=ConfigYamlLoader)  # noqa: S506 - a SafeLoader subclass


def _parse_scalar(text: str) -> Any:
    """Parse a command-line value as YAML (numbers, true/false, null, [lists]); fall back to the string."""
    try:
        return load_yaml(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def get_dotted(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"  # shipped inside the package: a pip install has them


def presets() -> dict[str, Path]:
    """Preset name -> its YAML file (`default`, `seed`, `tune-wide`, ...)."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


def preset_summary(path: Path) -> str:
    """A preset's first sentence, from its opening comment (which may wrap over several lines): what it is for."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip() if line.startswith("#") else None
        if not text:  # the paragraph ends at a blank comment line or the first setting
            if words or text is None:
                break
            continue
        words.append(text)
    paragraph = " ".join(words)
    return re.split(r"(?<=[.!?])\s+(?=[A-Z(])", paragraph, maxsplit=1)[0]


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file path, or a preset's name (`default`, `seed.yaml`) -> the file to read.

    A path that exists wins over a preset of the same name.

    Raises:
        ConfigError: neither a file nor a preset (the message lists the presets).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config '{name_or_path}' is a directory; give a YAML file or a preset name ({', '.join(presets())})")
    known = presets()
    if path.parent == Path(".") and path.stem in known and path.suffix in ("", ".yaml", ".yml"):
        return known[path.stem]
    close = difflib.get_close_matches(path.stem, known, n=1)
    hint = f" (did you mean the preset '{close[0]}'?)" if close else ""
    raise ConfigError(f"config file '{name_or_path}' does not exist and is not a preset{hint}; "
                      f"give a YAML file or a preset name: {', '.join(known)} (`loraclf config list`)")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = resolve_config(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except YamlLimitError as e:
        at = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"config file '{path}' is refused{at}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{at}; fix its syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text; re-save it as UTF-8") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (data, model, lora, train, tune)")
    return raw


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Apply `key=value` overrides to `raw`, then validate; one ConfigError for all problems."""
    raw = copy.deepcopy(raw)
    errs: list[str] = []
    for item in overrides or []:
        if "=" not in item:
            errs.append(f"{brief(item)}: overrides are key=value with a dotted key, e.g. lora.r=16")
            continue
        key, _, text = item.partition("=")
        set_dotted(raw, key.strip(), _parse_scalar(text))
    for name in SECTIONS:  # `lora:` with nothing under it is an empty section
        if isinstance(raw, dict) and name in raw and raw[name] is None:
            raw[name] = {}
    cfg = None
    try:
        cfg = _adapter().validate_python(raw)
    except ValidationError as e:
        errs.extend(describe_errors(e))
    if errs:
        shown = errs[:MAX_PROBLEMS] + ([f"and {len(errs) - MAX_PROBLEMS} more"] if len(errs) > MAX_PROBLEMS else [])
        raise ConfigError(errs[0] if len(errs) == 1 else "config has errors: " + "; ".join(shown))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the built-in defaults), apply overrides, validate."""
    raw = read_yaml(path) if path else {}
    return config_from_dict(raw, overrides)
