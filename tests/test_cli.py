"""The CLI is a thin layer over the config dataclasses: every command takes --config/--set, flags
are shorthands for config fields, and choices and defaults come from the dataclasses alone."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

import pytest

from goalrank import cli
from goalrank.data.bench import BenchPrepareConfig
from goalrank.serve.app import ServeConfig


def _commands(parser: argparse.ArgumentParser,
              prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf subcommand of ``parser`` by its words, e.g. ("bench", "serve")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, (*prefix, name)) or {(*prefix, name): sub})
    return found


def test_every_command_takes_config_and_set() -> None:
    commands = _commands(cli.build_parser())
    assert {" ".join(words) for words in commands} == {
        "demo", "simulate", "prepare", "stats", "audit", "feedback-curve", "train", "evaluate", "serve", "benchmark",
        "ensemble", "report", "bench prepare", "bench serve", "bench train", "bench pier"}
    for words, parser in commands.items():
        options = {option for action in parser._actions for option in action.option_strings}
        assert {"--config", "--set"} <= options, words


def test_every_flag_with_a_config_default_names_a_config_field_and_reaches_the_config() -> None:
    for words, parser in _commands(cli.build_parser()).items():
        shorthands = {action.dest: action.default for action in parser._actions
                      if isinstance(action.default, cli.ConfigDefault)}
        assert set(parser.get_default("config_flags") or ()) == set(shorthands), words
        for dest, default in shorthands.items():
            assert default.field == dest, words
            config_cls = getattr(importlib.import_module(default.module), default.cls)
            assert dest in {field.name for field in dataclasses.fields(config_cls)}, (words, dest)


def test_help_shows_the_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"default: {ServeConfig.port}" in shown and f"default: {ServeConfig.max_batch}" in shown
    with pytest.raises(SystemExit):
        cli.main(["bench", "prepare", "--help"])
    sizes = ",".join(map(str, BenchPrepareConfig().sizes))
    assert f"default: {sizes}" in " ".join(capsys.readouterr().out.split())


def test_serve_settings_come_from_set_and_flags_with_flags_last(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    seen: list[ServeConfig] = []
    monkeypatch.setattr("goalrank.serve.app.serve", seen.append)
    (tmp_path / "serve.toml").write_text("port = 9000\nmax_batch = 8\n")
    assert cli.main(["serve", "--run", "RUN", "--config", str(tmp_path / "serve.toml"), "--set", "max_body_bytes=4096",
                     "--set", "port=9001", "--port", "9002"]) == 0
    assert seen == [ServeConfig(run="RUN", port=9002, max_batch=8, max_body_bytes=4096)]


@pytest.mark.parametrize(("argv", "named"), [
    (["serve", "--run", "RUN", "--set", "max_body_bytes=10"], "serve.max_body_bytes=10"),
    (["serve", "--run", "RUN", "--backend", "tensorrt"], "backend='tensorrt': expected one of"),
    (["serve"], "missing required key(s) ['run'] (give the --run flag"),
    (["evaluate", "--run", "RUN", "--split", "dev"], "split='dev': expected one of ['train', 'valid', 'test']"),
    (["evaluate", "--run", "RUN", "--set", "beam_width=100000000"], "beam_width=100000000: expected in [1, 4096]"),
    (["stats", "DIR", "--set", "verify=maybe"], "verify='maybe': expected bool"),
    (["bench", "train", "--data", "D", "--reward", "R", "--steps", "0"], "steps=0: expected >= 1"),
    (["bench", "train", "--data", "D", "--reward", "R", "--precision", "fp16"], "precision='fp16'"),
    (["bench", "train", "--data", "D", "--reward", "R", "--warmup", "-1"], "warmup=-1: expected >= 0"),
    (["bench", "serve", "--run", "RUN", "--set", "malformed=2"], "malformed=2.0: expected in [0, 1]"),
    (["bench", "serve", "--run", "RUN", "--backends", "eager,tensorrt"], "backends='tensorrt'"),
    (["prepare", "--source", "csv", "--input", "x", "--out", "o"], "source='csv': expected one of"),
])
def test_bad_settings_exit_2_naming_the_field_before_any_work(argv: list[str], named: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("goalrank.serve.app.serve", lambda config: pytest.fail("served a bad config"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named in err
