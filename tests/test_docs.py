"""The docs (README.md, the MkDocs site in docs/) build, and say only what the code does.

The checks live in docs_check.py; here they run on the tree, and on copies of the docs with known
drifts put back, to show each drift is caught with the file, line and name to fix.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import docs_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """README.md and docs/ copied, to be edited by a test."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path.name} no longer holds {old!r}; update the test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def build_site(config_file: Path, site_dir: Path) -> None:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    build(load_config(config_file=str(config_file), site_dir=str(site_dir), strict=True))


def test_site_builds_in_strict_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It builds the site with no warning: every link, anchor and nav page resolves, every generated block renders."""
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    build_site(ROOT / "mkdocs.yml", tmp_path / "site")
    training = (tmp_path / "site" / "training" / "index.html").read_text(encoding="utf-8")
    assert "train.lora_plus_ratio" in training and "loraclf:config-fields" not in training
    assert "Usage: loraclf serve" in (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")


def test_strict_build_fails_on_a_broken_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It refuses a site whose page links to a page that does not exist."""
    from mkdocs.exceptions import Abort

    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "bench").symlink_to(ROOT / "bench")
    edit(tmp_path / "docs" / "data.md", "[Training and presets](training.md#data)", "[Training and presets](trainig.md#data)")
    with pytest.raises(Abort, match="strict mode"):
        build_site(tmp_path / "mkdocs.yml", tmp_path / "site")


@pytest.mark.parametrize("check", docs_check.ALL_CHECKS, ids=lambda c: c.__name__)
def test_docs_match_the_code(check) -> None:
    """It finds nothing wrong in README.md and docs/: commands, links, config keys, Python names, claims."""
    problems = check(ROOT)
    assert not problems, "the docs have drifted from the code:\n" + "\n".join(problems)


def test_catches_levers_said_to_be_off(docs_copy: Path) -> None:
    """It fails on the old README's "LoRA levers (all off by default)": four of them are on in the schema."""
    assert docs_check.check_default_claims(docs_copy) == []  # the tree as it is passes
    page = docs_copy / "docs" / "lora.md"
    page.write_text(page.read_text(encoding="utf-8") + (
        "\n**LoRA levers** (all off by default; `configs/quality.yaml` says which pay on the MiniLM protocol):\n"
        "`lora.use_rslora` (rank-stabilised scaling alpha/sqrt(r)), `lora.use_dora` (DoRA: a learned magnitude per\n"
        "adapted weight; slower step), `lora.init` (`default`, `gaussian`, `orthogonal`), `train.lora_plus_ratio` (LoRA+),\n"
        "`train.head_lr` (the fresh head and pooler get their own learning\n"
        "rate) and `train.label_smoothing` (training loss only). `configs/tune-levers.yaml` searches them.\n"), encoding="utf-8")
    problems = docs_check.check_default_claims(docs_copy)
    line = len(page.read_text(encoding="utf-8").splitlines()) - 4
    named = {p.split("`")[1] for p in problems}
    assert named == {"lora.use_rslora", "train.lora_plus_ratio", "train.head_lr", "train.label_smoothing"}, problems
    assert all(p.startswith(f"docs/lora.md:{line}: says off by default") for p in problems), problems


def test_catches_the_old_default_search_space(docs_copy: Path) -> None:
    """It fails on the old description of the default space (lr [3e-4, 3e-3], alpha {16, 32})."""
    assert docs_check.check_space_claims(docs_copy) == []
    page = docs_copy / "docs" / "tuning.md"
    edit(page, "## Sampling and pruning", (
        "Its default (`configs/default.yaml`, with the reasons in its comments) searches around the recommended\n"
        "settings: lr log-uniform [3e-4, 3e-3], r {8,16}, alpha {16,32}, dropout [0, 0.2].\n\n## Sampling and pruning"))
    line = page.read_text(encoding="utf-8").splitlines().index("## Sampling and pruning") - 2  # the sentence starts 2 lines up
    problems = docs_check.check_space_claims(docs_copy)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"docs/tuning.md:{line}: `lr [3e-4, 3e-3]`: configs/default.yaml searches train.lr over [0.00015, 0.0015]")
    assert "does not search alpha" in problems[1]


def test_catches_a_method_that_does_not_exist(docs_copy: Path) -> None:
    """It fails on `OnnxClassifier.from_dir` and names the method that exists."""
    assert docs_check.check_python_names(docs_copy) == []
    page = docs_copy / "docs" / "inference.md"
    edit(page, "OnnxClassifier.from_export_dir(path)", "OnnxClassifier.from_dir(path)")
    line = next(i for i, t in enumerate(page.read_text(encoding="utf-8").splitlines(), 1) if "from_dir(path)" in t)
    assert docs_check.check_python_names(docs_copy) == [
        f"docs/inference.md:{line}: `loraclf.onnx_backend.OnnxClassifier.from_dir` does not exist in the code "
        "(did you mean `loraclf.onnx_backend.OnnxClassifier.from_export_dir`?)"]


@pytest.mark.parametrize("command, message", [
    ("loraclf predict runs/x --input a.csv --bogus", "no such option: --bogus"),
    ("loraclf trian --epochs 1", "`loraclf` has no command 'trian'"),
    ("loraclf train lora.rank=8", "override 'lora.rank' is not a config field"),
    ("loraclf train -c sed", "-c sed is no preset"),
    ("loraclf export runs/x out extra", "`loraclf export` takes 2 argument(s), got extra: extra"),
    ("loraclf config shw", "`loraclf config` has no command 'shw'"),
])
def test_catches_a_command_the_cli_refuses(docs_copy: Path, command: str, message: str) -> None:
    """It parses each command line of a code block against the real CLI and names what it refuses."""
    (docs_copy / "docs" / "extra.md").write_text(f"# Extra\n\n```bash\nnice -n 19 true && {command}   # a comment\n```\n", encoding="utf-8")
    problems = docs_check.check_commands(docs_copy)
    assert len(problems) == 1 and problems[0].startswith(f"docs/extra.md:4: `{command}`"), problems
    assert message.lower() in problems[0].lower(), problems


def test_catches_an_option_no_command_takes(docs_copy: Path) -> None:
    """It fails on a backticked option in the prose that no loraclf command has, naming the closest one."""
    (docs_copy / "docs" / "extra.md").write_text("# Extra\n\nLimit requests with `--max-texts 64`.\n", encoding="utf-8")
    problems = docs_check.check_option_names(docs_copy)
    assert len(problems) == 1 and problems[0].startswith("docs/extra.md:3: `--max-texts` is no option of any loraclf command"), problems
    assert "of loraclf serve?)" in problems[0], problems


def test_catches_an_unknown_config_key(docs_copy: Path) -> None:
    """It fails on a backticked config key the schema lacks, with a suggestion."""
    (docs_copy / "docs" / "extra.md").write_text("# Extra\n\nSet `train.learning_rate=1e-3` for speed.\n", encoding="utf-8")
    problems = docs_check.check_config_keys(docs_copy)
    assert problems == ["docs/extra.md:3: `train.learning_rate` is not a config field (did you mean `train.lr`?); "
                        "a Python name is written in full, loraclf.train.learning_rate"], problems


def test_catches_a_broken_readme_link(docs_copy: Path) -> None:
    """It fails on a README link to a page or heading that does not exist."""
    edit(docs_copy / "README.md", "(docs/tuning.md)", "(docs/tunning.md)")
    edit(docs_copy / "README.md", "(docs/inference.md#export)", "(docs/inference.md#exports)")
    problems = docs_check.check_readme_links(docs_copy)
    assert len(problems) == 2 and "docs/tunning.md does not exist" in problems[0] and "no heading #exports" in problems[1], problems
