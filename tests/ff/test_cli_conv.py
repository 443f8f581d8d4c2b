"""``python -m ffops train-ff --arch conv`` end to end on small synthetic IDX data, with resume."""

import json

import pytest
import torch

from ffops.__main__ import main
from ffops.cli import train_ff_conv
from tests.helpers import write_prototype_idx

ARGS = ["train-ff", "--arch", "conv", "--channels", "10,20", "--batch-size", "50", "--threads", "1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    write_prototype_idx(root, n_train=400, n_test=100)
    return root


def _weights(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def test_command_writes_log_checkpoint_and_png(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ARGS + ["--data-root", str(data_root), "--epochs", "2", "--valid", "100", "--head", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "300 train / 100 valid / 100 test" in printed and "augment crop" in printed  # mnist default
    assert "epoch   2/2" in printed and "valid err goodness" in printed and "done in" in printed
    log = json.loads((out / "log.json").read_text())
    assert log["arch"] == "conv" and len(log["history"]) == 2 and log["wall_time_s"] > 0
    assert log["model"]["channels"] == [10, 20] and log["model"]["groups"] == [1, 1] and log["model"]["head"]
    assert log["trainer"]["lr"] == 0.01 and log["trainer"]["schedule"] == "cosine"
    assert set(log["history"][-1]["test"]) >= {"goodness", "last", "head"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_symba_objective_run(data_root, tmp_path, capsys):
    out = tmp_path / "symba"
    argv = ARGS + ["--data-root", str(data_root), "--epochs", "1", "--valid", "100", "--out", str(out)]
    assert main(argv + ["--objective", "symba", "--alpha", "4"]) == 0
    assert "symba blocks [10, 20]" in capsys.readouterr().out
    log = json.loads((out / "log.json").read_text())
    assert log["model"]["objective"] == "symba" and log["model"]["alpha"] == 4.0
    assert set(log["history"][-1]["test"]) == {"goodness", "last", "block_1", "block_2"}


def test_interrupted_run_resumes_to_the_same_weights(data_root, tmp_path, monkeypatch, capsys):
    common = ARGS + ["--data-root", str(data_root), "--epochs", "2", "--valid", "100"]
    assert main(common + ["--out", str(tmp_path / "whole")]) == 0

    save_each_epoch = train_ff_conv._SaveEachEpoch.on_epoch_end

    def stop_after_first_epoch(self, trainer, record):
        save_each_epoch(self, trainer, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_ff_conv._SaveEachEpoch, "on_epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        main(common + ["--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert main(["train-ff", "--resume", str(tmp_path / "cut" / "checkpoint.pt")]) == 0
    assert "resuming" in capsys.readouterr().out
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    with pytest.raises(SystemExit) as exc:
        main(["train-ff", "--resume", str(tmp_path / "cut" / "checkpoint.pt"), "--lr", "0.1"])
    assert exc.value.code == 2 and "--lr 0.1 (run: 0.01)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--arch", "conv", "--negatives", "random"], "--arch conv does not take --negatives"),
        (["--arch", "conv", "--layers", "784,10"], "--arch conv does not take --layers"),
        (["--channels", "10,20"], "--arch mlp does not take --channels"),
        (["--bf16", "--valid", "5"], "--arch mlp does not take --bf16, --valid"),
        (["--arch", "conv", "--valid", "100", "--channels", "10,25"], "multiple of num_classes"),
        (["--arch", "conv", "--valid", "100", "--channels", "10,20", "--pool", "1"], "one bool per block"),
        (["--arch", "conv", "--valid", "400"], "--valid 400 leaves no training images"),
        (["--arch", "conv", "--pool", "2"], "0 / 1 flags"),
        (["--arch", "conv", "--alpha", "4"], "--alpha is SymBa's scale: it needs"),
        (["--loss", "softplus", "--alpha", "4"], "--alpha is SymBa's scale: it needs"),
        (["--objective", "symba"], "--arch mlp does not take --objective"),
        (["--arch", "conv", "--objective", "symba", "--head", "--valid", "100"], "head=True needs objective"),
    ],
)
def test_option_mistakes(argv, message, data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-ff", "--data-root", str(data_root), "--out", str(tmp_path / "x"), "--epochs", "1", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
