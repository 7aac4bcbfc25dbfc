"""MkDocs hooks: the parts of the docs that are generated from the code, so they cannot drift from it.

A page asks for a generated block with an HTML comment on a line of its own:

- `<!-- loraclf:config-fields SECTION -->`: a table of every field of a config section (data, model,
  lora, train, tune, or `top` for name/out), rendered from the dataclasses in loraclf.config.schema:
  the dotted name, the type and the range or choices from the annotation, the default, and the
  field's help text (`metadata["help"]`, the same text `loraclf config show --fields` prints).
- `<!-- loraclf:config-fields KEY KEY ... -->`: the same table for the listed dotted fields only.
- `<!-- loraclf:space PRESET -->`: a preset's `tune.space`, read from the shipped YAML.
- `<!-- loraclf:presets -->`: every shipped preset with its first comment line (`loraclf config list`).
- `<!-- loraclf:reports -->`: every file under bench/reports/, linked, with the machine its JSON records.
- `<!-- loraclf:cli-reference -->`: each command's `--help`, rendered by the CLI itself.

`on_files` also adds bench/FINDINGS_*.md and bench/reports/ to the site, so pages link to the figures
and a strict build fails when a linked report is missing.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- loraclf:([\w-]+)((?: [\w.-]+)*) -->$", re.M)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    bench = ROOT / "bench"
    extra = sorted(bench.glob("FINDINGS_*.md")) + sorted(p for p in (bench / "reports").rglob("*") if p.is_file())
    for path in extra:
        files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def render(m: re.Match[str]) -> str:
        kind, args = m.group(1), m.group(2).split()
        renderers = {"config-fields": config_fields, "space": space_table, "presets": presets_table, "reports": reports_table,
                     "cli-reference": cli_reference}
        if kind not in renderers:
            raise ValueError(f"{page.file.src_uri}: unknown generated block <!-- loraclf:{kind} -->; use one of {', '.join(renderers)}")
        return renderers[kind](args)

    return MARKER.sub(render, markdown)


# ---------------------------------------------------------------------------------------------
# Config fields


def type_name(tp: Any) -> str:
    """A field's annotation as a reader writes it: `int`, `float | null`, `list[str]`, `"a" | "b"`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" if not isinstance(a, bool) else f"`{str(a).lower()}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if tp is type(None):
        return "null"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]" if args else origin.__name__
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    import yaml

    if isinstance(value, dict):
        return "see below"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def field_rows(keys: list[str] | None = None) -> list[tuple[str, Any, dataclasses.Field, Any]]:
    """(dotted name, section class, field, default) for every leaf field, or for `keys` in that order."""
    from loraclf.config.schema import SECTIONS, Config, field_at

    rows = []
    for f in dataclasses.fields(Config):
        if f.name not in SECTIONS:
            rows.append((f.name, Config, f, getattr(Config(), f.name)))
    for section, cls in SECTIONS.items():
        inst = cls()
        rows.extend((f"{section}.{f.name}", cls, f, getattr(inst, f.name)) for f in dataclasses.fields(cls))
    if keys is None:
        return rows
    by_name = {r[0]: r for r in rows}
    missing = [k for k in keys if k not in by_name or field_at(k) is None]
    if missing:
        raise ValueError(f"config-fields: {', '.join(missing)} not in loraclf.config.schema")
    return [by_name[k] for k in keys]


def allowed(cls: Any, name: str) -> str:
    from loraclf.config.schema import constraints

    bounds, choices = constraints(cls, name)
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{ops[k]} {v}" for k, v in bounds.items()) if bounds else ""


def config_fields(args: list[str]) -> str:
    if len(args) == 1 and args[0] in ("data", "model", "lora", "train", "tune", "top"):
        rows = [r for r in field_rows() if (r[0].split(".")[0] == args[0]) or (args[0] == "top" and "." not in r[0])]
    else:
        rows = field_rows(args)
    out = ["| field | type | default | range | what it does |", "|---|---|---|---|---|"]
    for name, cls, f, default in rows:
        tp = typing.get_type_hints(cls, include_extras=True)[f.name]
        help_text = f.metadata.get("help", "").replace("|", "\\|")
        out.append(f"| `{name}` | {type_name(tp).replace('|', '&#124;')} | `{yaml_value(default)}` | {allowed(cls, f.name)} | {help_text} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Presets and search spaces


def space_table(args: list[str]) -> str:
    from loraclf.config import load_config

    (preset,) = args
    cfg = load_config(preset)
    out = ["| field | type | values |", "|---|---|---|"]
    for key, p in cfg.tune.search_params().items():
        if p.type == "categorical":
            values = "{" + ", ".join(yaml_value(c) for c in p.choices) + "}"
        else:
            values = f"[{yaml_value(p.low)}, {yaml_value(p.high)}]" + (", log scale" if p.log else "") + (f", step {p.step}" if p.step else "")
        out.append(f"| `{key}` | {p.type} | {values} |")
    return "\n".join(out)


def presets_table(args: list[str]) -> str:
    from loraclf.config import preset_summary, presets

    out = ["| preset | what it is |", "|---|---|"]
    out.extend(f"| `-c {name}` | {preset_summary(path)} |" for name, path in presets().items())
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Benchmark reports


def recorded_machine(path: Path) -> str:
    """The CPU or GPU a benchmark's JSON says it ran on (benchmarks name it under env, machine or environment)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return ""
    env = next((data[k] for k in ("env", "machine", "environment") if isinstance(data, dict) and isinstance(data.get(k), dict)), {})
    cpu = env.get("cpu")
    cpu = cpu.get("model", "") if isinstance(cpu, dict) else cpu or ""
    return ", ".join(str(x) for x in (env.get("gpu"), cpu) if x)


def reports_table(args: list[str]) -> str:
    reports = ROOT / "bench" / "reports"
    out = ["| report | machine it records |", "|---|---|"]
    for path in sorted(p for p in reports.rglob("*") if p.is_file() and (p.parent == reports or p.name == "README.md")):
        uri = path.relative_to(ROOT).as_posix()
        machine = recorded_machine(path) if path.suffix == ".json" else ""
        out.append(f"| [`{path.relative_to(reports).as_posix()}`]({uri}) | {machine} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# CLI reference


def cli_reference(args: list[str]) -> str:
    import typer.main

    from loraclf.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("loraclf", [], resilient_parsing=True)
    ctx.max_content_width = ctx.terminal_width = 100
    out: list[str] = []

    def walk(cmd: Any, parent: Any, path: str, depth: int) -> None:
        sub_ctx = cmd.make_context(path.split()[-1], [], parent=parent, resilient_parsing=True) if parent else parent_ctx
        sub_ctx.max_content_width = sub_ctx.terminal_width = 100
        out.extend([f"{'#' * depth} `{path}`", "", "```text", cmd.get_help(sub_ctx), "```", ""])
        for name in getattr(cmd, "commands", {}):
            sub = cmd.get_command(sub_ctx, name)
            if not sub.hidden:
                walk(sub, sub_ctx, f"{path} {name}", min(depth + 1, 3))

    parent_ctx = ctx
    walk(root, None, "loraclf", 2)
    return "\n".join(out)
