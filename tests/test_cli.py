"""The blockpool command line: help everywhere, exit code 2 with a clear message on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from blockpool import cli, commands

SUBCOMMANDS = ("exp005", "exp006", "bench", "demo")


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: blockpool {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["nope"], "invalid choice"),
        (["exp006", "--runs", "0"], "expected a positive integer, got 0"),
        (["exp006", "--contexts", "4096,lots"], "got 'lots'"),
        (["exp006", "--contexts", ","], "comma-separated"),
        (["exp005", "--max-tokens", "-3"], "expected a positive integer"),
        (["demo", "--agents", "x"], "got 'x'"),
        (["exp005", "--dtype", "int3"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_model_gives_the_loaders_message_and_exit_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.gguf"
    assert cli.main(["exp005", "--model", str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "blockpool exp005: error:" in err
    assert f"GGUF file {str(missing)!r} does not exist" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_hidden_shape_flags_are_validated_too(tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["exp006", "--layers", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockpool", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ})


def test_module_entry_point_help_and_bad_args_in_a_fresh_process() -> None:
    ok = _run("exp006", "--help")
    assert ok.returncode == 0, ok.stderr
    assert "--contexts" in ok.stdout
    bad = _run("exp006", "--runs", "many")
    assert bad.returncode == 2
    assert "expected a positive integer, got 'many'" in bad.stderr


def test_bench_names_the_unknown_benchmark(capfd: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["bench", "no_such_bench"])
    assert code != 0
    assert "unknown benchmark(s) ['no_such_bench']" in capfd.readouterr().err


def test_demo_streams_two_turns_and_pool_usage(default_model, monkeypatch, capsys) -> None:
    monkeypatch.setattr(commands, "load", lambda name, dtype: default_model)
    assert cli.main(["demo", "--agents", "2", "--max-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "== turn 1" in out and "== turn 2" in out
    assert "| pool " in out
    assert "[agent-1]" in out and "[agent-2]" in out
    assert "pool after the demo" in out
