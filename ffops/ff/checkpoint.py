"""Checkpoints: a trainer's ``state_dict`` in one file (configs, weights, optimizers, history)."""

import os

import torch

from ffops.ff.conv_train import ConvFFTrainer
from ffops.ff.model import FFNet
from ffops.ff.train import FFTrainer


def save_checkpoint(path, trainer: FFTrainer | ConvFFTrainer, **extra) -> None:
    """Save ``trainer.state_dict()`` (plus ``extra`` entries, e.g. the CLI's arguments) to ``path``,
    atomically (a temporary file renamed into place)."""
    state = trainer.state_dict()
    clash = set(extra) & set(state)
    if clash:
        raise ValueError(f"save_checkpoint: extra keys {sorted(clash)} clash with the trainer's state")
    state.update(extra)
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, *, device=None, **trainer_overrides) -> FFTrainer:
    """Rebuild the FFNet and the FFTrainer saved at ``path`` (on ``device``, default the saved
    tensors' device mapped to CPU) and load their state. ``trainer_overrides`` replace saved trainer
    settings (e.g. ``callbacks=[...]``, ``ddp=True``). Extra entries saved with the checkpoint are in
    ``trainer.checkpoint_extra``."""
    state = torch.load(path, map_location=device or "cpu", weights_only=True)
    model = FFNet.from_config(state["model_config"], device=device)
    config = dict(state["config"])
    config.update(trainer_overrides)
    trainer = FFTrainer(model, **config)
    trainer.load_state_dict(state)
    known = {
        "config",
        "model_config",
        "model",
        "head",
        "optimizers",
        "head_optimizer",
        "generators",
        "global_step",
        "history",
    }
    trainer.checkpoint_extra = {k: v for k, v in state.items() if k not in known}
    return trainer
