"""config.inference.InferenceSettings: the one inference settings object of evaluate, predict, report and serve."""
from __future__ import annotations

import dataclasses

import pytest

from loraclf.config import InferenceSettings
from loraclf.errors import ConfigError


def test_defaults_are_valid_and_bad_values_are_one_line() -> None:
    assert InferenceSettings() == InferenceSettings(device=None, precision="auto", batch_size=None, backend="torch",
                                                    int8=False, compile="auto")
    for kwargs, message in [({"precision": "fp64"}, "--precision 'fp64' is not a precision; use one of auto, fp32, bf16, fp16"),
                            ({"backend": "tf"}, "--backend 'tf' is not a backend; use torch or onnx"),
                            ({"compile": "maybe"}, "--compile 'maybe' is not a choice; use auto, true or false"),
                            ({"int8": True}, "--int8 needs --backend onnx"),
                            ({"backend": "onnx", "compile": "true"}, "--compile true: it applies to the torch backend"),
                            ({"batch_size": 0}, "--batch-size 0: give a number of texts per forward pass of at least 1"),
                            ({"device": "tpu"}, "--device 'tpu' is not a device")]:
        with pytest.raises(ConfigError) as e:
            InferenceSettings(**kwargs)
        assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("command", ["evaluate", "predict", "report"])
def test_each_inference_command_has_an_option_per_setting(command: str) -> None:
    """evaluate, predict and report take the same options, built from the dataclass (report too, which had two)."""
    from typer.testing import CliRunner

    from loraclf.cli import app

    text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    for f in dataclasses.fields(InferenceSettings):
        assert f"--{f.name.replace('_', '-')}" in text, (command, f.name)


def test_the_old_compile_keyword_still_works_with_a_notice() -> None:
    from loraclf.inference import _renamed

    assert _renamed(None, "auto") == "auto"
    with pytest.warns(DeprecationWarning, match="compile_setting= is now compile="):
        assert _renamed(True, "auto") is True
