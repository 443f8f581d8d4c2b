"""``ConvFFTrainer``: block-local training of an ``FFConvNet`` with augmentation, a learning-rate
schedule, validation / test evaluation of every predictor, callbacks and resumable state.

One optimizer over all parameters trains every block on its own loss (the blocks' inputs are
detached: no gradient crosses blocks); each block's backward runs as soon as its loss is computed,
so the memory saved for backward is one block's, whatever the depth. ``bf16=True`` runs the blocks
under bfloat16 autocast (the convolutions in bf16, losses in float32); ``channels_last`` keeps
images and weights NHWC, the layout oneDNN / cuDNN convolutions and ``ffops.cwc_block`` prefer.
"""

import math
import time

import torch

from ffops.ff.augment import AUGMENTATIONS, augment
from ffops.ff.conv import FFConvNet
from ffops.ff.negatives import random_wrong_labels
from ffops.ff.train import Callback

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")


class ConvFFTrainer:
    """Trains ``model`` (an ``FFConvNet``) block-locally.

    Args:
        optimizer: ``adam`` | ``adamw`` | ``sgd`` (momentum 0.9), one over all parameters.
        lr: peak learning rate; ``schedule="cosine"`` decays it to 0 over the run's epochs.
        augment: ``none`` | ``crop`` | ``crop-flip`` (``ffops.ff.augment``), ``padding`` pixels.
        bf16: bfloat16 autocast of the blocks on the model's device.
        channels_last: NHWC memory format for weights and batches.
        seed: seeds the batch order, the augmentation and (objective ``symba``) the negative
            labels; the model's init is the caller's.
        callbacks: ``ffops.ff.Callback`` objects (``on_epoch_start``, ``on_batch_end``, ...).
    """

    def __init__(
        self,
        model: FFConvNet,
        *,
        optimizer: str = "adam",
        lr: float = 0.01,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        augment: str = "none",
        padding: int = 2,
        bf16: bool = False,
        channels_last: bool = False,
        seed: int = 0,
        callbacks: list[Callback] | None = None,
    ):
        if not isinstance(model, FFConvNet):
            raise TypeError(f"ConvFFTrainer: model must be an ffops.ff.FFConvNet, got {type(model).__name__}")
        for name, value, choices in (
            ("optimizer", optimizer, OPTIMIZERS),
            ("schedule", schedule, SCHEDULES),
            ("augment", augment, AUGMENTATIONS),
        ):
            if value not in choices:
                raise ValueError(f"ConvFFTrainer: {name} must be one of {choices}, got {value!r}")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"ConvFFTrainer: lr must be a finite float > 0, got {lr!r}")
        if not (isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"ConvFFTrainer: weight_decay must be a finite float >= 0, got {weight_decay!r}")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"ConvFFTrainer: padding must be an int >= 0, got {padding!r}")
        self.model = model
        self.config = {
            "optimizer": optimizer,
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "schedule": schedule,
            "augment": augment,
            "padding": padding,
            "bf16": bool(bf16),
            "channels_last": bool(channels_last),
            "seed": seed,
        }
        if channels_last:
            model.to(memory_format=torch.channels_last)
        params = list(model.parameters())
        if optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
        self.callbacks = list(callbacks or [])
        self._data_gen = torch.Generator().manual_seed(seed)
        self._augment_gen = torch.Generator().manual_seed(seed + 1)
        self._negative_gen = torch.Generator().manual_seed(seed + 2)
        self.history: list[dict] = []

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.config["channels_last"] else images

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config["bf16"])

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """One optimizer step on a batch (augmented as configured); returns the losses (blocks, head)."""
        x = augment(
            self._prepare(images), self.config["augment"], padding=self.config["padding"], generator=self._augment_gen
        )
        labels = labels.to(self.device)
        negatives = None
        if self.model.objective == "symba":
            negatives = random_wrong_labels(labels, self.model.num_classes, generator=self._negative_gen)
        self.optimizer.zero_grad(set_to_none=True)
        losses, pending = [], self.model.iter_losses(x, labels, negatives)
        while True:
            with self._autocast():  # the block's forward; its backward outside autocast
                loss = next(pending, None)
            if loss is None:
                break
            loss.backward()  # frees this block's saved tensors before the next block runs
            losses.append(loss.detach().float())
        self.optimizer.step()
        return torch.stack(losses).tolist()

    @torch.no_grad()
    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000, *, flip_tta: bool = False
    ) -> dict[str, float]:
        """Error (a fraction) of every predictor of ``FFConvNet.scores`` (``goodness``, ``last``,
        ``head``, ``block_<i>``), in eval mode (BatchNorm's running statistics). ``flip_tta``: each
        predictor scores an image by the sum of its scores on the image and on its mirror image
        (test-time augmentation; for data whose classes are mirror-symmetric, as Fashion-MNIST's)."""
        was_training = self.model.training
        self.model.eval()
        wrong: dict[str, int] = {}
        try:
            for i in range(0, len(images), batch_size):
                x, y = self._prepare(images[i : i + batch_size]), labels[i : i + batch_size].to(self.device)
                with self._autocast():
                    scores = self.model.scores(x)
                    if flip_tta:
                        mirrored = self.model.scores(x.flip(-1))
                        scores = {name: s + mirrored[name] for name, s in scores.items()}
                for name, s in scores.items():
                    wrong[name] = wrong.get(name, 0) + int((s.argmax(1) != y).sum())
        finally:
            self.model.train(was_training)
        return {name: count / len(images) for name, count in wrong.items()}

    def _lr_at(self, progress: float) -> float:
        """The learning rate after ``progress`` (fraction of the run's steps done)."""
        if self.config["schedule"] == "cosine":
            return self.config["lr"] * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.config["lr"]

    def fit(
        self,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        *,
        valid: tuple[torch.Tensor, torch.Tensor] | None = None,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        epochs: int = 30,
        batch_size: int = 128,
        start_epoch: int = 0,
    ) -> list[dict]:
        """Train for ``epochs`` (the last partial batch of each epoch dropped); ``start_epoch`` goes on
        with a resumed run. Appends to and returns ``self.history``: per epoch ``epoch``, ``loss``
        (mean per block, then the head's), ``lr`` (at the epoch's end), ``time_s`` (training),
        ``samples_per_s``, ``valid`` / ``test`` (``evaluate``'s errors, when given), ``eval_time_s``."""
        op = "ConvFFTrainer.fit"
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{op}: {name} must be an int >= 1, got {value!r}")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or not 0 <= start_epoch < epochs:
            raise ValueError(f"{op}: start_epoch must be an int in [0, {epochs}), got {start_epoch!r}")
        _check_images(op, "train", train_images, train_labels, self.model)
        for name, split in (("valid", valid), ("test", test)):
            if split is not None:
                _check_images(op, name, *split, self.model)
        steps = len(train_images) // batch_size
        if steps == 0:
            raise ValueError(f"{op}: batch_size ({batch_size}) exceeds the training images ({len(train_images)})")
        for cb in self.callbacks:
            cb.on_fit_start(self, {"epochs": epochs, "steps_per_epoch": steps, "start_epoch": start_epoch})
        self.model.train()
        for epoch in range(start_epoch, epochs):
            for cb in self.callbacks:
                cb.on_epoch_start(self, {"phase": None, "epoch": epoch + 1, "epochs": epochs})
            t0 = time.perf_counter()
            order = torch.randperm(len(train_images), generator=self._data_gen)
            sums = None
            for s in range(steps):
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr_at((epoch * steps + s) / (epochs * steps))
                idx = order[s * batch_size : (s + 1) * batch_size]
                losses = self.train_step(train_images[idx], train_labels[idx])
                sums = losses if sums is None else [a + b for a, b in zip(sums, losses)]
                for cb in self.callbacks:
                    cb.on_batch_end(self, {"epoch": epoch + 1, "step": s + 1, "steps": steps, "losses": losses})
            seconds = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1,
                "loss": [v / steps for v in sums],
                "lr": self.optimizer.param_groups[0]["lr"],
                "time_s": seconds,
                "samples_per_s": steps * batch_size / seconds,
            }
            t1 = time.perf_counter()
            for name, split in (("valid", valid), ("test", test)):
                if split is not None:
                    record[name] = self.evaluate(*split)
            record["eval_time_s"] = time.perf_counter() - t1
            self.history.append(record)
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
        for cb in self.callbacks:
            cb.on_fit_end(self, self.history)
        return self.history

    # ---- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything to rebuild and resume: configs, weights, optimizer state, generators, history."""
        return {
            "arch": "conv",
            "config": dict(self.config),
            "model_config": dict(self.model.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generators": {
                "data": self._data_gen.get_state(),
                "augment": self._augment_gen.get_state(),
                "negatives": self._negative_gen.get_state(),
            },
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._data_gen.set_state(state["generators"]["data"].cpu())
        self._augment_gen.set_state(state["generators"]["augment"].cpu())
        if "negatives" in state["generators"]:  # absent in checkpoints of cwc runs saved before symba
            self._negative_gen.set_state(state["generators"]["negatives"].cpu())
        self.history = list(state["history"])

    @classmethod
    def from_state_dict(cls, state: dict, *, device=None, **overrides) -> "ConvFFTrainer":
        """The trainer (and its net, on ``device``) saved by ``state_dict``; ``overrides`` replace
        saved trainer settings (e.g. ``callbacks=[...]``)."""
        model = FFConvNet.from_config(state["model_config"], device=device)
        config = dict(state["config"])
        config.update(overrides)
        trainer = cls(model, **config)
        trainer.load_state_dict(state)
        return trainer


def _check_images(op: str, name: str, images, labels, model: FFConvNet) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"{op}: {name} images must be a [N, C, H, W] tensor, got {getattr(images, 'shape', images)}")
    if images.shape[1] != model.config["in_channels"]:
        raise ValueError(
            f"{op}: {name} images have {images.shape[1]} channels, the net takes {model.config['in_channels']}"
        )
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),) or labels.is_floating_point():
        raise ValueError(f"{op}: {name} labels must be an integer tensor [{len(images)}], got {labels!r:.80}")
    if len(labels) and (labels.min() < 0 or labels.max() >= model.num_classes):
        raise ValueError(f"{op}: {name} labels must be in [0, {model.num_classes}), got {labels.min()}..{labels.max()}")
