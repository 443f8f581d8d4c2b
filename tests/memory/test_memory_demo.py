"""``python -m ffops memory-demo``: patches a small Llama-style model, prints the report and both
models' losses, writes report.txt and losses.json."""

import json

import pytest

from ffops.__main__ import main


def test_memory_demo_runs_and_writes_its_outputs(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "demo"
    argv = ["memory-demo", "--steps", "2", "--seq-len", "16", "--batch-size", "2", "--threads", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ffops.memory.patch: 7 modules replaced, 5 norms folded" in printed
    assert "loss plain" in printed and "patched" in printed
    payload = json.loads((out / "losses.json").read_text())
    assert len(payload["losses"]["plain"]) == len(payload["losses"]["patched"]) == 2
    assert payload["saved_bytes_per_step"]["patched"] < payload["saved_bytes_per_step"]["plain"]
    assert "MSRMSNorm" in (out / "report.txt").read_text()
