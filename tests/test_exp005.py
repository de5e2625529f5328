"""EXP-005 as a command: the real model with few tokens; artifacts exist, parse and agree."""

from __future__ import annotations

import csv
import json

import pytest

from blockpool import cli, commands
from lab import exp005
from lab.exp005 import first_divergence, run_exp005
from telemetry import read_events


class FakeTokenizer:
    def decode(self, ids: list[int]) -> str:
        return f"<{ids[0]}>"


def test_first_divergence_names_index_expected_and_actual() -> None:
    d = first_divergence("a b c", "a b x", [1, 2, 3], [1, 2, 9], FakeTokenizer())
    assert d is not None
    assert (d.token_index, d.expected_id, d.expected_text, d.actual_id, d.actual_text) == (2, 3, "<3>", 9, "<9>")
    assert d.char_index == 4
    assert "first divergent token #2: expected 3 '<3>', actual 9 '<9>'" in d.describe()


def test_first_divergence_when_one_output_stops_early_or_only_text_differs() -> None:
    short = first_divergence("a b", "a", [1, 2], [1], FakeTokenizer())
    assert short is not None and (short.token_index, short.expected_id, short.actual_id) == (1, 2, None)
    text_only = first_divergence("ab", "aX", [1, 2], [1, 2], FakeTokenizer())
    assert text_only is not None and text_only.token_index is None and text_only.char_index == 1
    assert first_divergence("same", "same", [1], [2], FakeTokenizer()) is None


def test_exp005_small_run_passes_and_artifacts_agree(default_model, tmp_path) -> None:
    model, tokenizer = default_model
    result = run_exp005(model, tokenizer, out_dir=tmp_path, model_name="embedded", max_tokens=8, leak_runs=2)
    assert result.go, [(p.label, p.reference, p.actual, p.error) for p in result.prompts]
    assert result.leak.ok and result.leak.peak_used > result.leak.initial_used

    refs = json.loads((tmp_path / "exp_005_references.json").read_text())
    assert refs["generated_by"] == "mlx_lm.generate" and refs["max_tokens"] == 8
    assert list(refs["references"]) == ["short", "medium", "long"]
    assert refs["prompts"]["short"] == "The quick brown fox"

    with (tmp_path / "exp_005_results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["prompt"] for r in rows] == list(refs["references"])
    for row in rows:
        text = refs["references"][row["prompt"]]
        assert int(row["reference_len"]) == len(text) == int(row["actual_len"])
        assert row["match"] == "True" and row["no_error"] == "True" and row["tokens_in_range"] == "True"
        assert 1 <= int(row["generated_tokens"]) <= 8
        assert int(row["token_count"]) == int(row["prompt_tokens"]) + int(row["generated_tokens"])
        assert float(row["engine_s"]) > 0 and float(row["reference_s"]) > 0
        assert row["divergent_token_index"] == ""

    report = (tmp_path / "EXP-005-blockpool-correctness.md").read_text()
    assert "**EXP-005 PASS (GO)**: 3/3 byte-identical" in report
    assert "| Prompt | Byte-identical |" in report
    assert "No leaks after 2 runs" in report and "mlx_lm" in report
    for row in rows:
        assert f"| {row['prompt']} | PASS |" in report


def test_a_mismatch_is_reported_with_its_first_divergent_token(default_model, tmp_path, monkeypatch) -> None:
    model, tokenizer = default_model
    monkeypatch.setattr(exp005, "generate_reference", lambda *a: ("not what the model says", 0.5))
    monkeypatch.setattr(exp005, "reference_token_ids", lambda *a: [7, 7, 7])
    result = run_exp005(model, tokenizer, out_dir=tmp_path, model_name="embedded", max_tokens=3, leak_runs=1,
                        prompts=[("short", "The quick brown fox")])
    assert not result.go
    (prompt,) = result.prompts
    assert prompt.divergence is not None and prompt.divergence.token_index == 0
    assert prompt.divergence.expected_id == 7 and prompt.divergence.actual_id == prompt.token_ids[0]
    with (tmp_path / "exp_005_results.csv").open(newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["match"] == "False" and row["divergent_token_index"] == "0" and row["expected_token_id"] == "7"
    report = (tmp_path / "EXP-005-blockpool-correctness.md").read_text()
    assert "FAIL (NO-GO)" in report and "first divergent token #0: expected 7" in report


@pytest.mark.parametrize("go", [True, False])
def test_command_exit_code_follows_go_and_writes_a_telemetry_log(default_model, tmp_path, monkeypatch, go) -> None:
    monkeypatch.setattr(commands, "load", lambda name, dtype: default_model)
    if not go:
        monkeypatch.setattr(exp005, "generate_reference", lambda *a: ("different", 0.5))
        monkeypatch.setattr(exp005, "reference_token_ids", lambda *a: [1])
    monkeypatch.setattr(exp005, "SEED_PROMPTS", (("short", "The quick brown fox"),))
    log = tmp_path / "events.jsonl"
    code = cli.main(["exp005", "--out", str(tmp_path), "--max-tokens", "3", "--leak-runs", "1",
                     "--telemetry-log", str(log)])
    assert code == (0 if go else 1)
    kinds = {event.kind for event in read_events(log)}
    assert {"request_submitted", "request_finished"} <= kinds
