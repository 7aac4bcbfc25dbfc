"""Checks that README.md and docs/*.md say only what the code does (used by test_docs.py).

Each check takes the root of a tree holding README.md and docs/ and returns its problems, one line
each, `FILE:LINE: what is wrong and the fix`, so whoever changes the CLI or the config sees where the
docs have to follow:

- commands: every `loraclf ...` line in a code block (and every inline `loraclf ...` span) parses
  against the real CLI: known commands, known options, no extra arguments, KEY=VALUE overrides naming
  config fields, `-c NAME` naming a preset.
- options: every backticked `--option` in the prose is one some loraclf command takes.
- README links: every relative link of README.md (read on its own, outside the site) and its #anchor exist.
- config keys: every `section.field` written in backticks (alone, or as `section.field=value`) is a
  field of loraclf.config.schema.
- Python names: every backticked `loraclf.x.y` or `Class.method` of a loraclf class exists (read from
  the sources, no import), and every name in another installed package (`torch.load`) exists (imported).
- default claims: a sentence saying fields are "on/off by default" cites only fields whose schema
  default is on/off.
- space claims: `name [low, high]` or `name {a, b}` in a sentence naming a preset (or the default
  space) matches that preset's tune.space.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]  # the code the docs are checked against (a checked tree may be a copy)
SECTIONS = ("data", "model", "lora", "train", "tune")
FILE_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".onnx", ".csv", ".tsv", ".db", ".png", ".html", ".pt", ".py",
                 ".md", ".txt", ".parquet", ".log", ".sh", ".toml", ".safetensors", ".new")
DOTTED = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\(.*\))?$")
FENCE = re.compile(r"^(\s*)(```|~~~)")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------------------
# Reading the Markdown


def code_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line inside a fenced code block, backslash continuations joined."""
    inside, pending, start = False, "", 0
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = no
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside code blocks."""
    inside = False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            yield no, line


def spans(line: str) -> list[str]:
    """The inline code spans of a line (single backticks)."""
    return re.findall(r"`([^`]+)`", line)


def sentences(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, sentence) of the prose: paragraphs and list items cut at '. ' before a capital or `."""
    block: list[tuple[int, str]] = []

    def flush() -> Iterator[tuple[int, str]]:
        if not block:
            return
        joined, starts, pos = "", [], 0
        for no, line in block:
            starts.append((len(joined), no))
            joined += line.strip() + " "
        for part in re.split(r"(?<=[.!?])\s+(?=[A-Z`*(])", joined):
            at = joined.find(part, pos)
            pos = at + len(part)
            yield max(n for off, n in starts if off <= max(at, 0)), part
        block.clear()

    for no, line in prose_lines(text):
        if not line.strip() or re.match(r"^\s*([-*]|\d+\.)\s", line) or line.lstrip().startswith(("#", "|")):
            yield from flush()
        if line.strip():
            block.append((no, line))
    yield from flush()


# ---------------------------------------------------------------------------------------------
# The CLI


@cache
def root_command() -> Any:
    import typer.main

    from loraclf.cli import app

    return typer.main.get_command(app)


def loraclf_argvs(line: str) -> Iterator[list[str]]:
    """The loraclf invocations on a shell line: `loraclf ...`, `.venv/bin/loraclf ...`, `... -m loraclf.cli ...`."""
    line = re.sub(r"\s#.*$", "", line.strip()).removeprefix("$ ")
    try:
        words = shlex.split(line, comments=False)
    except ValueError:
        words = line.split()
    segment: list[str] = []
    for word in [*words, "&&"]:
        if word in ("&&", "||", "|", ";", "<", ">", "2>", ">>"):
            if segment:
                yield from _invocation(segment)
            segment = [] if word in ("&&", "||", "|", ";") else ["<redirect>"]
        elif segment != ["<redirect>"]:
            segment.append(word)
        else:
            segment = ["<redirect>"]


def _invocation(words: list[str]) -> Iterator[list[str]]:
    if words and (words[0] == "loraclf" or words[0].endswith("/bin/loraclf")):
        yield words[1:]
    elif "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "loraclf.cli":
        yield words[words.index("-m") + 2:]


def optional_marks_dropped(argv: list[str]) -> list[str]:
    """`[--int8]` and `[--data test.csv]` (what a usage line marks optional) as the options themselves."""
    out, depth = [], 0
    for a in argv:
        if a.startswith("[-"):
            a, depth = a[1:], depth + 1
        if depth and a.endswith("]"):
            a, depth = a[:-1], depth - 1
        out.append(a)
    return out


def parse_command(argv: list[str]) -> tuple[str, Any, dict[str, Any], list[str]]:
    """(command path, click command, parsed options and arguments by name, a placeholder left unparsed) for an argv.

    Raises:
        ValueError: an unknown command or option, an option without its value, or extra arguments.
    """
    argv = optional_marks_dropped(argv)
    cmd, path = root_command(), "loraclf"
    ctx = cmd.context_class(cmd, info_name="loraclf")  # not make_context: it parses, and resilient parsing ignores unknown options
    while True:
        parser = cmd.make_parser(ctx)
        try:
            opts, args, _ = parser.parse_args(list(argv))
        except Exception as e:  # click's NoSuchOption, BadOptionUsage, ...
            raise ValueError(f"`{path}`: {' '.join(str(e.format_message() if hasattr(e, 'format_message') else e).split())}") from None
        if not hasattr(cmd, "commands"):
            break
        if not args or args[0] == "..." or args[0].isupper():  # `loraclf --debug ...`, `loraclf COMMAND --help`
            return path, cmd, opts, args
        sub = cmd.get_command(ctx, args[0])
        if sub is None:
            raise ValueError(f"`{path}` has no command '{args[0]}' (it has: {', '.join(cmd.commands)})")
        ctx = sub.context_class(sub, info_name=args[0], parent=ctx)
        cmd, path, argv = sub, f"{path} {args[0]}", args[1:]
    if args:  # the parser puts declared arguments into opts; what is left is extra
        arguments = [p for p in cmd.params if p.param_type_name == "argument"]
        raise ValueError(f"`{path}` takes {sum(p.nargs for p in arguments)} argument(s), got extra: {' '.join(args)}")
    return path, cmd, opts, args


def check_commands(root: Path) -> list[str]:
    from loraclf.config import presets

    problems = []
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        lines = [(no, line, False) for no, line in code_lines(text)]
        lines += [(no, s, True) for no, line in prose_lines(text) for s in spans(line) if s.startswith("loraclf ")]
        for no, line, inline in lines:
            for argv in loraclf_argvs(line):
                where = f"{rel(root, path)}:{no}: `loraclf {' '.join(argv)}`"
                try:
                    cmd_path, cmd, opts, args = parse_command(argv)
                except ValueError as e:
                    if not (inline and argv[-1].startswith("-") and "requires an argument" in str(e)):  # `loraclf train --config`
                        problems.append(f"{where}: {e}")
                    continue
                config = opts.get("config")
                if isinstance(config, str) and "/" not in config and "." not in config and config not in presets():
                    problems.append(f"{where}: -c {config} is no preset (presets: {', '.join(presets())})")
                elif isinstance(config, str) and config.startswith("configs/") and not (REPO / config).is_file():
                    problems.append(f"{where}: {config} does not exist")
                if any(p.name == "overrides" for p in cmd.params):
                    for item in (a for a in opts.get("overrides") or () if a != "..."):
                        key = item.partition("=")[0]
                        if "=" not in item:
                            problems.append(f"{where}: '{item}' is not KEY=VALUE (`{cmd_path}` takes overrides like lora.r=16)")
                        elif not is_config_key(key):
                            problems.append(f"{where}: override '{key}' is not a config field{suggest(key)}")
    return problems


@cache
def all_options() -> dict[str, list[str]]:
    """Every option spelling (`--max-queue`, `--no-batching`, `-c`) -> the commands that take it."""
    found: dict[str, list[str]] = {}

    def walk(cmd: Any, path: str) -> None:
        for p in cmd.params:
            for flag in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
                found.setdefault(flag, []).append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(root_command(), "loraclf")
    found.setdefault("--help", ["loraclf"])
    return found


def check_option_names(root: Path) -> list[str]:
    """Every option written in backticks in the prose (`--max-queue`, `--compile auto|true|false`) is one a command takes."""
    problems = []
    for path in doc_files(root):
        for no, line in prose_lines(path.read_text(encoding="utf-8")):
            for span in spans(line):
                flag = re.split(r"[\s=|\[]", span, maxsplit=1)[0]
                if re.fullmatch(r"--?[a-z][\w-]*", flag) and flag not in all_options():
                    import difflib

                    close = difflib.get_close_matches(flag, list(all_options()), n=1)
                    hint = f" (did you mean `{close[0]}`, of {', '.join(all_options()[close[0]])}?)" if close else ""
                    problems.append(f"{rel(root, path)}:{no}: `{flag}` is no option of any loraclf command{hint}")
    return problems


def check_readme_links(root: Path) -> list[str]:
    """README.md's relative links (mkdocs checks the site's own; the README is read on its own, e.g. on GitHub)."""
    from markdown.extensions.toc import slugify

    problems = []
    for no, line in prose_lines((root / "README.md").read_text(encoding="utf-8")):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            path = root / file
            if not path.exists():
                problems.append(f"README.md:{no}: the link target {file} does not exist")
            elif anchor and path.suffix == ".md":
                headings = [slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)]
                if anchor not in headings:
                    problems.append(f"README.md:{no}: {file} has no heading #{anchor} (it has: {', '.join(headings)})")
    return problems


# ---------------------------------------------------------------------------------------------
# Config keys


def is_config_key(key: str) -> bool:
    from loraclf.config.schema import field_at, is_config_field

    if key.startswith("tune.space."):  # a search dimension names a field itself
        return is_config_field(key[len("tune.space."):])
    return is_config_field(key) or (field_at(key) is not None and key in SECTIONS)


def suggest(key: str) -> str:
    """` (did you mean ...?)`, as `loraclf config show` would suggest it."""
    from loraclf.config.loader import did_you_mean

    section, _, field = key.rpartition(".")
    close = did_you_mean(section if section in SECTIONS else "", field) if section in SECTIONS or not section else None
    return f" (did you mean `{close}`?)" if close else " (see `loraclf config show --fields`)"


def cited_names(root: Path) -> Iterator[tuple[str, int, str]]:
    """(file, line, dotted name) of every backticked dotted name in the prose (a `=value` cut off)."""
    for path in doc_files(root):
        for no, line in prose_lines(path.read_text(encoding="utf-8")):
            for span in spans(line):
                name = span.partition("=")[0].strip() if "=" in span and " " not in span.partition("=")[0] else span.strip()
                m = DOTTED.match(name)
                if m and not m.group(1).endswith(FILE_SUFFIXES) and not re.search(r"\.(json|yaml|onnx|csv|db|pt)\b", m.group(1)):
                    yield rel(root, path), no, m.group(1)


def check_config_keys(root: Path) -> list[str]:
    return [f"{file}:{no}: `{name}` is not a config field{suggest(name)}; a Python name is written in full, loraclf.{name}"
            for file, no, name in cited_names(root) if name.split(".")[0] in SECTIONS and not is_config_key(name)]


# ---------------------------------------------------------------------------------------------
# Python names


@cache
def loraclf_classes() -> dict[str, str]:
    """Class name -> the loraclf module defining it."""
    names: dict[str, str] = {}
    for module, path in sorted(loraclf_modules().items()):
        for node in parsed(path).body:
            if isinstance(node, ast.ClassDef):
                names.setdefault(node.name, module)
    return names


@cache
def loraclf_modules() -> dict[str, Path]:
    """Module name -> source file of every loraclf module."""
    src = REPO / "src" / "loraclf"
    return {".".join(("loraclf", *p.relative_to(src).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in src.rglob("*.py")}


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _defined(body: list[ast.stmt], name: str) -> ast.AST | str | None:
    """What `name` is at the top of `body`: a def/class node, "value" (an assignment, an outside import),
    "loraclf.mod:attr" (imported from a loraclf module), or None (not there)."""
    found: ast.AST | str | None = None
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = node
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = found or "value"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            found = found or "value"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == name:
                    found = found or "value"
        elif isinstance(node, (ast.If, ast.Try)):  # TYPE_CHECKING blocks, optional imports
            inner = _defined(node.body, name)
            found = found or inner
    return found


def _from_import(module: str, name: str) -> str | None:
    """'loraclf.x' when `module` gets `name` by `from .x import name` (or `from loraclf.x import name`)."""
    path = loraclf_modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            source = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module or "")
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            if source in loraclf_modules():
                return f"{source}:{original}"
    return None


def _attr_in_module(module: str, name: str, depth: int = 0) -> ast.AST | str | None:
    if depth > 10:
        return "value"
    sub = f"{module}.{name}"
    if sub in loraclf_modules():
        return f"module:{sub}"
    found = _defined(parsed(loraclf_modules()[module]).body, name)
    if found == "value":
        origin = _from_import(module, name)
        if origin:
            return _attr_in_module(*origin.split(":"), depth=depth + 1)
    return found


def _attr_in_class(module: str, cls: ast.ClassDef, name: str, depth: int = 0) -> bool | None:
    if _defined(cls.body, name) is not None:
        return True
    unknown = False
    for base in cls.bases:
        base_name = base.id if isinstance(base, ast.Name) else None
        where = _attr_in_module(module, base_name) if base_name else None
        if isinstance(where, ast.ClassDef) and depth < 10:
            home = module if _defined(parsed(loraclf_modules()[module]).body, base_name) is where else loraclf_classes().get(base_name, module)
            if _attr_in_class(home, where, name, depth + 1):
                return True
        elif base_name not in ("object", "Protocol", "NamedTuple"):
            unknown = True  # a base from outside loraclf may define it
    return None if unknown else False


def resolve_loraclf(name: str) -> bool | None:
    """Whether a loraclf name exists, read from the sources (no import: torch is slow to load); None: cannot tell."""
    parts = name.split(".")
    if parts[0] in loraclf_classes():
        module, rest = loraclf_classes()[parts[0]], parts
    else:
        module, rest = "loraclf", parts[1:]
    target: ast.AST | str | None = f"module:{module}"
    for part in rest:
        if isinstance(target, str) and target.startswith("module:"):
            module = target[len("module:"):]
            target = _attr_in_module(module, part)
            if target is None:
                return False
            if isinstance(target, str) and ":" in target and not target.startswith("module:"):
                module, _, attr = target.partition(":")
                target = _attr_in_module(module, attr)
        elif isinstance(target, ast.ClassDef):
            found = _attr_in_class(module, target, part)
            if found is not True:
                return found
            target = _defined(target.body, part) if isinstance(_defined(target.body, part), ast.ClassDef) else "value"
        else:
            return None  # an attribute of a function's or a variable's value: not checked
    return True


def resolve_library(name: str) -> bool | None:
    """Whether a name in an installed package (`torch.load`) exists, by importing it; None: not a package."""
    head, *rest = name.split(".")
    if not head.isidentifier() or importlib.util.find_spec(head) is None:
        return None
    obj: Any = None
    for i in range(len(rest), -1, -1):  # the longest importable module prefix, then attributes
        try:
            obj = importlib.import_module(".".join([head, *rest[:i]]))
        except ImportError:
            continue
        rest = rest[i:]
        break
    for i, part in enumerate(rest):
        if i == len(rest) - 1 and part in dir(obj):  # a lazy package (transformers) lists names it has not imported
            return True
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def is_loraclf_name(name: str) -> bool:
    return name.split(".")[0] == "loraclf" or name.split(".")[0] in loraclf_classes()


def check_python_names(root: Path) -> list[str]:
    """loraclf's own names (`loraclf.x.y`, `Classifier.from_run_dir`), read from the sources."""
    return [f"{file}:{no}: `{name}` does not exist in the code{nearest_attr(name)}"
            for file, no, name in cited_names(root)
            if name.split(".")[0] not in SECTIONS and is_loraclf_name(name) and resolve_loraclf(name) is False]


def check_library_names(root: Path) -> list[str]:
    """Names in other installed packages (`torch.load`, `transformers.pipeline`): imported, so slower."""
    problems = []
    for file, no, name in cited_names(root):
        if name.split(".")[0] in SECTIONS or is_loraclf_name(name):
            continue
        try:
            found = resolve_library(name)
        except Exception:  # noqa: BLE001 - a package that fails to import is reported, not raised
            found = False
        if found is False:
            problems.append(f"{file}:{no}: `{name}` does not exist in the installed packages")
    return problems


def nearest_attr(name: str) -> str:
    """` (did you mean ...?)` for a name whose owner exists."""
    import difflib

    owner, _, last = name.rpartition(".")
    head = owner.split(".")[0]
    if resolve_loraclf(owner) is not True:
        return ""
    cls_module = loraclf_classes().get(owner.split(".")[-1])
    candidates: list[str] = []
    if cls_module:
        for node in parsed(loraclf_modules()[cls_module]).body:
            if isinstance(node, ast.ClassDef) and node.name == owner.split(".")[-1]:
                candidates = [n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    elif owner in loraclf_modules() or head != "loraclf":
        candidates = [n.name for n in parsed(loraclf_modules().get(owner, REPO / "x")).body
                      if isinstance(n, (ast.FunctionDef, ast.ClassDef))] if owner in loraclf_modules() else []
    close = difflib.get_close_matches(last, candidates, n=1, cutoff=0.5)
    return f" (did you mean `{owner}.{close[0]}`?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Claims about defaults and search spaces


def default_of(key: str) -> tuple[Any, str]:
    from loraclf.config.schema import Config, field_at

    cls, f = field_at(key)  # type: ignore[misc]
    section = key.split(".")[0]
    return getattr(getattr(Config(), section), f.name), f.metadata.get("help", "")


def is_off(value: Any, help_text: str) -> bool:
    """A default that leaves its feature off: false, null, 0, `none`/`default`, or the value its help says turns it off."""
    if value is None or value is False or value in ("none", "default", "false"):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == 0:
            return True
        m = re.search(r"(\d+(?:\.\d+)?) turns (?:it|\w+) off", help_text)
        return bool(m) and float(m.group(1)) == value
    return False


def check_default_claims(root: Path) -> list[str]:
    problems = []
    for path in doc_files(root):
        for no, sentence in sentences(path.read_text(encoding="utf-8")):
            claims = {state for state in ("on", "off") if re.search(rf"\b{state} by default\b", sentence)}
            if len(claims) != 1:
                continue
            (state,) = claims
            for span in spans(sentence):
                key = span.partition("=")[0]
                if "=" in span or key.split(".")[0] not in SECTIONS or not is_config_key(key) or key in SECTIONS:
                    continue
                value, help_text = default_of(key)
                if is_off(value, help_text) != (state == "off"):
                    problems.append(f"{rel(root, path)}:{no}: says {state} by default, but `{key}` defaults to {value!r} "
                                    f"(loraclf.config.schema); fix the sentence")
    return problems


NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
SPACE_CLAIM = re.compile(rf"`?([A-Za-z_][\w.]*)`?(?: log-uniform| uniform| log)? ([\[{{])\s*({NUMBER}(?:\s*,\s*{NUMBER})*)\s*([\]}}])")


@cache
def preset_space(name: str) -> dict[str, Any]:
    from loraclf.config import load_config

    return load_config(name).tune.search_params()


def claimed_preset(sentence: str) -> str | None:
    from loraclf.config import presets

    named = set(re.findall(r"configs/([\w-]+)\.ya?ml", sentence)) | set(re.findall(r"-c ([\w-]+)", sentence))
    named &= set(presets())
    if len(named) == 1:
        return named.pop()
    if not named and re.search(r"\bdefault (search )?space\b|\bdefault `?tune\.space`?", sentence):
        return "default"
    return None


def check_space_claims(root: Path) -> list[str]:
    from loraclf.config.schema import describe_fields

    problems = []
    for path in doc_files(root):
        for no, sentence in sentences(path.read_text(encoding="utf-8")):
            claims = SPACE_CLAIM.findall(sentence)
            preset = claimed_preset(sentence) if claims else None
            if preset is None:
                continue
            space = preset_space(preset)
            fields = {r[0] for r in describe_fields()} | {r[0].rsplit(".", 1)[-1] for r in describe_fields()}
            for word, open_, values, close in (c for c in claims if c[0] in fields):  # `lr [..]`, not `in [..]`
                matches = [k for k in space if k == word or k.rsplit(".", 1)[-1] == word]
                where = f"{rel(root, path)}:{no}: `{word} {open_}{values}{close}`"
                if len(matches) != 1:
                    problems.append(f"{where}: configs/{preset}.yaml's tune.space does not search {word} "
                                    f"(it searches {', '.join(space)})")
                    continue
                p, nums = space[matches[0]], [float(v) for v in values.split(",")]
                actual = [float(c) for c in p.choices] if p.type == "categorical" else [p.low, p.high]
                if open_ == "{" and p.type != "categorical" or open_ == "[" and p.type == "categorical" or \
                        len(nums) != len(actual) or not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(sorted(nums), sorted(actual))):
                    shown = "{" + ", ".join(f"{c:g}" for c in actual) + "}" if p.type == "categorical" else f"[{p.low:g}, {p.high:g}]"
                    problems.append(f"{where}: configs/{preset}.yaml searches {matches[0]} over {shown}; fix the text")
    return problems


ALL_CHECKS = (check_commands, check_option_names, check_readme_links, check_config_keys, check_python_names, check_library_names, check_default_claims, check_space_claims)

