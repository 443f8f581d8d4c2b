"""``python -m ffops train-ff`` end to end on small synthetic IDX data, including resuming a run."""

import json

import pytest
import torch

from ffops import ff
from ffops.__main__ import main
from ffops.cli import train_ff
from tests.helpers import write_prototype_idx

ARGS = [
    "train-ff",
    "--layers",
    "784,48,48",
    "--batch-size",
    "50",
    "--threads",
    "1",
    "--mode",
    "collaborative",
    "--collab-layers",
    "past",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    write_prototype_idx(root, n_train=400, n_test=100)
    return root


def _params(out):
    return ff.load_checkpoint(out / "checkpoint.pt").model.state_dict()


def test_command_writes_log_checkpoint_and_png(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            ARGS
            + [
                "--data-root",
                str(data_root),
                "--epochs",
                "3",
                "--eval-every",
                "2",
                "--skip-first",
                "--input-dropout",
                "0.2",
                "--weight-decay",
                "1e-4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "epoch   3/3" in printed and "samples/s" in printed and "done in" in printed
    log = json.loads((out / "log.json").read_text())
    assert len(log["history"]) == 3 and log["wall_time_s"] > 0
    assert ["test_error_goodness" in r for r in log["history"]] == [False, True, True]
    assert log["trainer"]["collab_layers"] == "past" and log["trainer"]["skip_first"] is True
    assert log["trainer"]["input_dropout"] == 0.2 and log["trainer"]["weight_decay"] == 1e-4
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trainer = ff.load_checkpoint(out / "checkpoint.pt")
    assert trainer.checkpoint_extra["cli_args"]["epochs"] == 3
    assert 0 <= log["history"][-1]["test_error_goodness"] <= 1


def test_interrupted_run_resumes_to_the_same_weights(data_root, tmp_path, monkeypatch, capsys):
    common = ARGS + ["--data-root", str(data_root), "--epochs", "3"]
    assert main(common + ["--out", str(tmp_path / "whole")]) == 0

    save_each_epoch = train_ff._SaveEachEpoch.on_epoch_end

    def stop_after_first_epoch(self, trainer, record):
        save_each_epoch(self, trainer, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_ff._SaveEachEpoch, "on_epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        main(common + ["--out", str(tmp_path / "cut")])
    assert len(json.loads((tmp_path / "cut" / "log.json").read_text())["history"]) == 1
    monkeypatch.undo()

    assert main(["train-ff", "--resume", str(tmp_path / "cut" / "checkpoint.pt")]) == 0
    assert "resuming" in capsys.readouterr().out
    whole, resumed = _params(tmp_path / "whole"), _params(tmp_path / "cut")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    log = json.loads((tmp_path / "cut" / "log.json").read_text())
    assert [r["epoch"] for r in log["history"]] == [1, 2, 3]


def test_resume_refuses_other_settings_and_finished_runs(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(ARGS + ["--data-root", str(data_root), "--epochs", "1", "--out", str(out)]) == 0
    ckpt = str(out / "checkpoint.pt")
    for argv, message in (
        (["--resume", ckpt, "--lr", "0.1"], "--lr 0.1 (run: 0.003)"),
        (["--resume", ckpt], "has done all its 1 epochs"),
        (["--resume", str(tmp_path / "missing.pt")], "no such checkpoint"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["train-ff", *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    # a longer schedule goes on from the saved epoch
    assert main(["train-ff", "--resume", ckpt, "--epochs", "2"]) == 0
    assert len(json.loads((out / "log.json").read_text())["history"]) == 2
