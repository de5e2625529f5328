"""blockpool-tui's command line and settings: sources, precedence, and exit code 2 on bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui.run import main
from tui.cli import SettingsError, parse_settings
from engine.factory import DEFAULT_KV_MEMORY_BYTES
from frontend.settings import parse_size


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("BLOCKPOOL_FAST_BLAS", "0")  # main() must not re-exec the test process
    for name in ("MODEL", "BLOCKS", "KV_MEMORY", "MAX_TOKENS", "AGENTS", "SYSTEM", "TEMPERATURE", "KEYMAP"):
        monkeypatch.delenv(f"BLOCKPOOL_{name}", raising=False)
    return tmp_path / "config.toml"


@pytest.mark.parametrize(("text", "expected"), [
    ("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1.5g", 3 * 2**29), ("4096", 4096), ("64 kib", 65536),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


def test_defaults():
    settings = parse_settings([])
    assert (settings.model, settings.blocks, settings.kv_memory_bytes) == (None, None, DEFAULT_KV_MEMORY_BYTES)
    assert (settings.max_tokens, settings.agents, settings.temperature) == (256, 2, 0.0)


def test_command_line_beats_environment_beats_config_file(isolated, monkeypatch):
    isolated.write_text('max_tokens = 7\nagents = 3\nblocks = 100\n[keymap]\nbroadcast = "ctrl+t"\n')
    monkeypatch.setenv("BLOCKPOOL_AGENTS", "4")
    settings = parse_settings(["--kv-memory", "1GiB"])
    assert (settings.max_tokens, settings.agents) == (7, 4)
    assert (settings.blocks, settings.kv_memory) == (None, 2**30)  # the flag replaces the file's size
    assert settings.keymap == {"broadcast": "ctrl+t"}


@pytest.mark.parametrize("argv", [
    ["--blocks", "0"], ["--kv-memory", "12 parsecs"], ["--max-tokens", "0"], ["--temperature", "-1"],
    ["--agents", "99"], ["--refresh", "0"],
])
def test_bad_values_raise_a_clear_error(argv):
    with pytest.raises(SettingsError, match=argv[0]):
        parse_settings(argv)


def test_invalid_config_file_names_the_file(isolated):
    isolated.write_text("max_tokens = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        parse_settings([])


@pytest.mark.parametrize("argv", [["--blocks", "-3"], ["--blocks", "5", "--kv-memory", "1G"], ["--max-tokens", "x"]])
def test_main_exits_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "blockpool-tui: error" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--blocks", "--kv-memory", "--max-tokens", "--agents", "--system",
                   "--temperature", "--telemetry-log"):
        assert option in out


def test_console_script_exits_2_before_loading_mlx():
    script = Path(sys.executable).with_name("blockpool-tui")
    result = subprocess.run([str(script), "--kv-memory", "lots"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "'lots' is not a size" in result.stderr


def test_importing_the_app_does_not_load_mlx():
    code = "import sys, tui.app; sys.exit('mlx.core' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
