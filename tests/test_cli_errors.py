"""Every user mistake on the command line: one line on stderr naming the argument, exit status 2,
no traceback, nothing trained or written. And a missing optional dependency (matplotlib) costs
only its plot."""

import json

import pytest
import torch

from ffops.__main__ import main
from ffops.cli import args as cli_args
from tests.helpers import write_prototype_idx


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    write_prototype_idx(root, n_train=200, n_test=50)
    return root


def _refused(argv, capsys, *, contains):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"python -m ffops {argv[0]}: error: "), err
    assert contains in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv,contains",
    [
        (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
        (["--layers", "784,abc"], "argument --layers: expected comma-separated integers > 0"),
        (["--layers", "784"], "argument --layers: expected at least 2 sizes"),
        (["--layers", "784,0,10"], "argument --layers: expected comma-separated integers > 0"),
        (["--epochs", "0"], "argument --epochs: expected an integer > 0, got '0'"),
        (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["--lr", "nan"], "argument --lr: expected a finite number"),
        (["--input-dropout", "1.5"], "argument --input-dropout: expected a number in [0, 1)"),
        (["--mode", "backprop"], "argument --mode: invalid choice: 'backprop'"),
        (["--negatives", "none"], "argument --negatives: invalid choice"),
        (["--device", "tpu"], "argument --device: expected cpu, cuda or cuda:N, got 'tpu'"),
    ],
)
def test_train_ff_argument_mistakes(argv, contains, capsys, tmp_path):
    _refused(["train-ff", *argv, "--out", str(tmp_path / "run")], capsys, contains=contains)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_while_parsing(capsys):
    _refused(["train-ff", "--device", "cuda"], capsys, contains="this machine has no CUDA device")


def test_train_ff_mistakes_found_after_parsing(data_root, tmp_path, capsys):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("not a checkpoint")
    out = str(tmp_path / "run")
    _refused(["train-ff", "--resume", str(not_a_checkpoint)], capsys, contains="not a train-ff checkpoint")
    _refused(["train-ff", "--resume", str(tmp_path / "missing.pt")], capsys, contains="no such checkpoint file")
    _refused(["train-ff", "--data-root", str(tmp_path / "none"), "--out", out], capsys, contains="data not found")
    _refused(
        ["train-ff", "--data-root", str(data_root), "--layers", "100,50", "--out", out],
        capsys,
        contains="--layers must start with the input size of mnist, 784",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv,contains",
    [
        (["--sparsities", "0.9,1.5"], "argument --sparsities: expected comma-separated numbers in (0, 1)"),
        (["--layers", "784,10"], "argument --layers: expected at least 3 sizes"),
        (["--backend", "numpy"], "argument --backend: invalid choice: 'numpy'"),
        (["--prune-every", "-3"], "argument --prune-every: expected an integer > 0"),
    ],
)
def test_train_sparse_argument_mistakes(argv, contains, capsys):
    _refused(["train-sparse", *argv], capsys, contains=contains)


def test_train_sparse_layers_must_fit_the_data(data_root, tmp_path, capsys):
    argv = ["train-sparse", "--data-root", str(data_root), "--layers", "784,32,7", "--out", str(tmp_path / "r")]
    _refused(argv, capsys, contains="must start with the input size 784 and end with the number of classes 10")
    assert not (tmp_path / "r").exists()


def test_train_ff_without_matplotlib_finishes_without_the_plot(data_root, tmp_path, capsys, monkeypatch):
    real = cli_args.has_module
    monkeypatch.setattr(cli_args, "has_module", lambda name: False if name == "matplotlib" else real(name))
    out = tmp_path / "run"
    argv = ["train-ff", "--data-root", str(data_root), "--layers", "784,16", "--epochs", "1", "--threads", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: matplotlib is not installed: no curves.png" in err
    assert (out / "checkpoint.pt").is_file() and json.loads((out / "log.json").read_text())["history"]
    assert not (out / "curves.png").exists()


def test_help_lists_choices_and_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-ff", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "{mnist,fashion-mnist}" in out and "examples:" in out and "--resume runs/" in out
