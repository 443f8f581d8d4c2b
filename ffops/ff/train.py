"""``FFTrainer``: supervised (label overlay) or unsupervised (hybrid images) Forward-Forward training.

One step: positive rows (images with their true label overlaid) and as many negative rows (the same
images with a wrong label, random or hard; or hybrid images) are concatenated and run up the layer
chain once (ffops.ff.step), each layer learning from its own loss, with per-layer backward.
Alongside, a linear softmax head learns from the neutral-label activities (detached).

Progress output stays out of the library: ``fit`` calls ``callbacks`` (``Callback`` subclasses) and
returns ``history``, a JSON-serializable list with one dict per epoch (see ``fit``).

How the defaults were chosen (validation runs on MNIST, with their numbers):
benchmarks/results/README.md.
"""

import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ffops._validation import check_choice, check_finite_real, labels_range_checked
from ffops.ff import distributed
from ffops.ff.cuda_graph import CudaGraphBackend, StepGraphs, capturable_optimizer_groups, set_learning_rate
from ffops.ff.labels import check_labels, overlay_rows
from ffops.ff.model import FFNet
from ffops.ff.negatives import gumbel_noise, hard_wrong_labels, hybrid_images, random_wrong_labels
from ffops.ff.predict import (
    LinearHead,
    head_features,
    layer_goodness_per_label,
    layer_outputs_per_label,
    predict,
    resolve_head_layers,
)
from ffops.ff.stats import goodness_histograms
from ffops.ff.step import BACKWARDS, COLLAB_LAYERS, MODES, layer_losses

OPTIMIZERS = ("adam", "adamw", "sgd")
NEGATIVES = ("random", "hard", "head", "hybrid")


class StepBatch(NamedTuple):
    """One step's data on this rank (FFTrainer.make_batch).

    rows: positive then negative rows (ffops.nn.OverlayRows when supervised, a tensor of images and
    hybrid images when not); n_pos: positive rows; images / labels: this rank's positive samples;
    centered: with hard negatives, per layer the rows' goodness minus threshold from the hard-negative
    pass (collaborative FF's offsets without another forward), else None; head_features: the softmax
    head's input for ``images`` when already computed (negatives="head"), else None; outputs: with
    hard negatives (and a shard within ``chunk_size``), per layer the rows' ``(h, sumsq)`` from the
    hard-negative pass, which scored every label with the current parameters, the rows' labels among
    them: the layers need not run on the rows again, else None.
    """

    rows: object
    n_pos: int
    images: torch.Tensor
    labels: torch.Tensor
    centered: list | None = None
    head_features: torch.Tensor | None = None
    outputs: list | None = None


class Callback:
    """Hooks called by ``FFTrainer.fit`` (override what you need; all receive the trainer).

    ``info`` dicts: on_fit_start: epochs, batch_size, steps_per_epoch, phases (greedy: the layer of
    each phase), train_samples, world_size. on_epoch_start: phase, epoch, epochs. on_batch_end:
    phase, epoch, step, steps, samples, losses (``{layer: detached loss tensor}``, under DDP this
    rank's shard's: call ``.item()`` only when you display it, it synchronizes the device), head_loss.
    on_epoch_end: the history record (its losses and errors are the global batch's, under DDP too).
    """

    def on_fit_start(self, trainer, info): ...
    def on_epoch_start(self, trainer, info): ...
    def on_batch_end(self, trainer, info): ...
    def on_epoch_end(self, trainer, record): ...
    def on_fit_end(self, trainer, history): ...


def _as_data(op, name, images, labels_name, labels, num_classes, in_features, device, dtype):
    images = torch.as_tensor(images)
    if not images.is_floating_point() or images.dim() < 2:
        raise ValueError(
            f"{op}: {name} must be float images [N, features] (or [N, H, W]), got {images.dtype} {tuple(images.shape)}"
        )
    shape = tuple(images.shape[1:]) if images.dim() == 3 else None
    images = images.reshape(images.shape[0], -1)
    if images.shape[1] != in_features:
        raise ValueError(f"{op}: {name} has {images.shape[1]} features per sample, the net takes {in_features}")
    labels = check_labels(op + f" ({labels_name})", torch.as_tensor(labels), images.shape[0], num_classes)
    return images.to(device, dtype), labels.to(device), shape


class FFTrainer:
    """Trains an FFNet (and a linear softmax head) with Forward-Forward.

    The defaults (with FFNet's: SymBa's loss with alpha 8, mean goodness, RMS normalization) are the
    recipe measured best on MNIST for 784-500-500 and 784-1000 x 4 nets on a 2-core CPU: every layer
    learns from every step on its own loss ("all"), hard negatives, Adam lr 3e-3 with the linear
    cooldown, batch 100, 30 epochs, prediction by goodness summed over all layers (the measurements:
    benchmarks/results/README.md).

    Args:
        model: the FFNet. mode: ``"all"`` | ``"greedy"`` | ``"collaborative"`` (ffops.ff.step).
        collab_layers: ``"others"`` (all other layers; with random negatives one extra no-grad forward
            per step) or ``"past"``. collab_weight: scale of the other layers' goodness in a layer's
            logit (1: collaborative FF as published; see ffops.ff.step).
        negatives: ``"random"`` wrong labels | ``"hard"`` (sampled from the net's own per-label
            softmax, true label excluded; costs a ``B * C``-row inference per step) | ``"head"``
            (sampled from the softmax head's prediction, true label excluded: no extra pass, the
            head's neutral-label features are computed every step anyway) | ``"hybrid"``
            (unsupervised: no labels in the input, hybrid-image negatives; predict with the head).
        hard_temperature: of the hard-negative softmax (over summed layer log-odds, or head logits).
        on_value / neutral_value: label overlay (ffops.ff.labels).
        optimizer: ``"adam"`` | ``"adamw"`` | ``"sgd"`` (momentum), one per layer; lr, weight_decay, momentum.
        cooldown: linear learning-rate decay to 0 over the second half of training (of each greedy phase).
        head: train a LinearHead on ``head_layers`` (``"upper"``, ``"all"`` or indices); head_lr, head_weight_decay.
        skip_first: leave the first layer out of goodness prediction (Hinton's choice).
        backward: ``"per_layer"`` (memory of one layer) or ``"joint"``.
        ddp: wrap each layer (and the head) in its own DistributedDataParallel (ffops.ff.distributed).
        seed: seeds the trainer's generators (data order, negatives); seed the model init yourself.
        image_shape, blur_steps: hybrid images. hist_bins, hist_samples: goodness histograms per epoch.
        eval_train_samples: train error on this fixed subset (None: all). chunk_size: samples per
            inference chunk (``chunk_size * C`` rows for goodness prediction).
        input_dropout: fraction of input features zeroed at random in each training sample (a
            permutation-invariant regularizer; the label is written afterwards; the same features
            in a sample's positive and negative rows); 0 turns it off. callbacks: Callback objects.
        cuda_graph: capture the training step in a CUDA graph and replay it (ffops.ff.cuda_graph):
            ``True`` (a CUDA model; not with ``ddp`` or ``negatives="hybrid"``), ``False``, or
            ``"auto"``: on where it applies. The first steps of each batch shape run eagerly (warm-up);
            the results are those of the eager steps.
    """

    def __init__(
        self,
        model: FFNet,
        *,
        mode="all",
        collab_layers="others",
        collab_weight=1.0,
        negatives="hard",
        hard_temperature=1.0,
        on_value=1.0,
        neutral_value=None,
        optimizer="adam",
        lr=3e-3,
        weight_decay=0.0,
        momentum=0.9,
        cooldown=True,
        head=True,
        head_layers="all",
        head_lr=1e-3,
        head_weight_decay=0.0,
        skip_first=False,
        backward="per_layer",
        ddp=False,
        seed=0,
        image_shape=None,
        blur_steps=6,
        hist_bins=30,
        hist_samples=1000,
        eval_train_samples=10000,
        chunk_size=1024,
        input_dropout=0.1,
        callbacks=(),
        cuda_graph=False,
    ):
        op = "FFTrainer"
        if not isinstance(model, FFNet):
            raise TypeError(f"{op}: model must be an ffops.ff.FFNet, got {type(model).__name__}")
        for name, value, choices in (
            ("mode", mode, MODES),
            ("collab_layers", collab_layers, COLLAB_LAYERS),
            ("negatives", negatives, NEGATIVES),
            ("optimizer", optimizer, OPTIMIZERS),
            ("backward", backward, BACKWARDS),
        ):
            check_choice(op, name, value, choices)
        for name, value in (("lr", lr), ("head_lr", head_lr), ("hard_temperature", hard_temperature)):
            check_finite_real(op, name, value, positive=True)
        for name, value in (
            ("weight_decay", weight_decay),
            ("head_weight_decay", head_weight_decay),
            ("momentum", momentum),
            ("collab_weight", collab_weight),
        ):
            if check_finite_real(op, name, value) < 0:
                raise ValueError(f"{op}: {name} must be >= 0, got {value}")
        for name, value, low in (
            ("seed", seed, 0),
            ("blur_steps", blur_steps, 0),
            ("hist_bins", hist_bins, 1),
            ("hist_samples", hist_samples, 2),
            ("chunk_size", chunk_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{op}: {name} must be an int >= {low}, got {value!r}")
        if eval_train_samples is not None and (not isinstance(eval_train_samples, int) or eval_train_samples < 1):
            raise ValueError(f"{op}: eval_train_samples must be a positive int or None, got {eval_train_samples!r}")
        if not (on_value == "max" or (isinstance(on_value, (int, float)) and not isinstance(on_value, bool))):
            raise ValueError(f"{op}: on_value must be a number or 'max', got {on_value!r}")
        if neutral_value is not None and (
            isinstance(neutral_value, bool) or not isinstance(neutral_value, (int, float))
        ):
            raise ValueError(f"{op}: neutral_value must be a number or None, got {neutral_value!r}")
        if image_shape is not None and (len(image_shape) != 2 or min(image_shape) < 1):
            raise ValueError(f"{op}: image_shape must be (height, width) or None, got {image_shape!r}")
        for name, value in (("cooldown", cooldown), ("head", head), ("skip_first", skip_first), ("ddp", ddp)):
            if not isinstance(value, bool):
                raise TypeError(f"{op}: {name} must be True or False, got {value!r}")
        if not 0 <= check_finite_real(op, "input_dropout", input_dropout) < 1:
            raise ValueError(f"{op}: input_dropout must be in [0, 1), got {input_dropout}")
        if negatives == "hybrid" and not head:
            raise ValueError(f"{op}: negatives='hybrid' (unsupervised) predicts with the head; set head=True")
        if negatives == "head" and not head:
            raise ValueError(f"{op}: negatives='head' samples wrong labels from the softmax head; set head=True")
        use_graph = self._resolve_cuda_graph(op, cuda_graph, model.device, ddp, negatives)
        resolve_head_layers(head_layers, len(model.layers))  # validates
        head_layers = head_layers if isinstance(head_layers, str) else list(head_layers)
        self.model, self.callbacks = model, list(callbacks)
        self.config = {
            "mode": mode,
            "collab_layers": collab_layers,
            "collab_weight": collab_weight,
            "negatives": negatives,
            "hard_temperature": hard_temperature,
            "on_value": on_value,
            "neutral_value": neutral_value,
            "optimizer": optimizer,
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "cooldown": cooldown,
            "head": head,
            "head_layers": head_layers,
            "head_lr": head_lr,
            "head_weight_decay": head_weight_decay,
            "skip_first": skip_first,
            "backward": backward,
            "ddp": ddp,
            "seed": seed,
            "image_shape": None if image_shape is None else tuple(image_shape),
            "blur_steps": blur_steps,
            "hist_bins": hist_bins,
            "hist_samples": hist_samples,
            "eval_train_samples": eval_train_samples,
            "chunk_size": chunk_size,
            "input_dropout": input_dropout,
            "cuda_graph": cuda_graph,  # as asked (True / False / "auto"): a checkpoint stays portable with "auto"
        }
        self.supervised = negatives != "hybrid"
        self.head = LinearHead.for_model(model, head_layers) if head else None
        self.optimizers = [self._make_optimizer(layer.parameters(), lr, weight_decay) for layer in model.layers]
        self.head_optimizer = self._make_optimizer(self.head.parameters(), head_lr, head_weight_decay) if head else None
        self.rank, self.world_size = distributed.world() if ddp else (0, 1)
        self._layer_modules = [distributed.wrap(layer) for layer in model.layers] if ddp else None
        self._head_module = distributed.wrap(self.head) if ddp and head else self.head
        self._noise_gen = torch.Generator(device=model.device).manual_seed(seed)
        self._data_gen = torch.Generator().manual_seed(seed + 1)
        self.global_step, self.history = 0, []
        self._graphs = None  # StepGraphs when the step is captured (self.uses_cuda_graph)
        if use_graph:
            for opt in self._all_optimizers():
                capturable_optimizer_groups(opt, model.device)
            self._graphs = StepGraphs(self._step, (self._noise_gen,), CudaGraphBackend(model.device))

    @staticmethod
    def _resolve_cuda_graph(op, cuda_graph, device, ddp, negatives) -> bool:
        """``cuda_graph`` (True, False or "auto") as a bool; True where it cannot apply is an error."""
        if cuda_graph not in (True, False, "auto"):
            raise ValueError(f"{op}: cuda_graph must be True, False or 'auto', got {cuda_graph!r}")
        why_not = None
        if device.type != "cuda":
            why_not = "the model is not on a CUDA device"
        elif ddp:
            why_not = "ddp=True (its bucketed all-reduce is not captured here)"
        elif negatives == "hybrid":
            why_not = "negatives='hybrid' (its partner check reads the device)"
        if cuda_graph is True and why_not:
            raise ValueError(f"{op}: cuda_graph=True needs a capturable step, but {why_not}")
        return cuda_graph is True or (cuda_graph == "auto" and why_not is None)

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether training steps are replayed from CUDA graphs."""
        return self._graphs is not None

    def _all_optimizers(self) -> list:
        return self.optimizers + ([self.head_optimizer] if self.head_optimizer else [])

    def _make_optimizer(self, params, lr, weight_decay):
        kind = self.config["optimizer"]
        # fused kernels (CPU and CUDA): Adam's are about twice as fast as the per-tensor loop on CPU; SGD's
        # is its only one that takes a learning-rate tensor on the device without reading it back (the
        # CUDA graph path, ffops.ff.cuda_graph), and eager runs step as captured ones
        fused = (self.model.device.type in ("cpu", "cuda")) or None
        if kind == "sgd":
            momentum = self.config["momentum"]
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, weight_decay=weight_decay, fused=fused)

    def _set_lr_factor(self, factor: float) -> None:
        for opt, base in [(o, self.config["lr"]) for o in self.optimizers] + (
            [(self.head_optimizer, self.config["head_lr"])] if self.head_optimizer else []
        ):
            for group in opt.param_groups:
                set_learning_rate(group, base * factor)

    # ---- one step --------------------------------------------------------------------------------
    def make_batch(self, x: torch.Tensor, y: torch.Tensor, num_layers: int | None = None) -> StepBatch:
        """Positive + negative rows of this rank's shard of the global batch ``x, y`` (a StepBatch).

        Random numbers are drawn for the global batch, so sharding does not change them."""
        c, cfg = self.model.num_classes, self.config
        if cfg["input_dropout"] > 0:  # the same pixels dropped in the positive and negative copies
            x = x * (torch.rand(x.shape, generator=self._noise_gen, device=x.device) >= cfg["input_dropout"])
        lo, hi = distributed.shard_bounds(x.shape[0], self.rank, self.world_size)
        xs, ys = x[lo:hi], y[lo:hi]
        if not self.supervised:
            neg = hybrid_images(x, cfg["image_shape"], blur_steps=cfg["blur_steps"], generator=self._noise_gen)
            return StepBatch(torch.cat([xs, neg[lo:hi]]), hi - lo, xs, ys)
        centered = feats = label_outputs = outputs = None
        if cfg["negatives"] == "random":
            wrong = random_wrong_labels(y, c, generator=self._noise_gen)[lo:hi]
        else:
            noise = gumbel_noise((x.shape[0], c), generator=self._noise_gen, device=x.device)[lo:hi]
            if cfg["negatives"] == "head":
                feats = self._head_features(xs)
                with torch.no_grad():
                    scores = self.head(feats)
            else:
                if xs.shape[0] <= cfg["chunk_size"]:  # one chunk: keep every layer's output for the step
                    label_outputs = layer_outputs_per_label(
                        self.model, xs, on_value=cfg["on_value"], num_layers=num_layers
                    )
                    layer_g = [
                        self.model.goodness_from_sumsq(i, sumsq).view(-1, c)
                        for i, (_, sumsq) in enumerate(label_outputs)
                    ]
                else:
                    layer_g = layer_goodness_per_label(
                        self.model,
                        xs,
                        on_value=cfg["on_value"],
                        chunk_size=cfg["chunk_size"],
                        num_layers=num_layers,
                    )
                scores = sum(self.model.layer_logit(i, g) for i, g in enumerate(layer_g))
            wrong = hard_wrong_labels(scores, ys, temperature=cfg["hard_temperature"], noise=noise)
            if cfg["negatives"] == "hard":
                rows = torch.cat([ys, wrong])
                centered = [
                    torch.cat([g, g]).gather(1, rows[:, None])[:, 0] - self.model.layers[i].threshold
                    for i, g in enumerate(layer_g)
                ]
                if label_outputs is not None:  # the step's rows: row b * C + label of the pass's outputs
                    index = torch.arange(xs.shape[0], device=xs.device).repeat(2) * c + rows
                    outputs = [(h.index_select(0, index), sumsq.index_select(0, index)) for h, sumsq in label_outputs]
        # positive then negative rows of the same images: the first layer's GEMMs see each image once
        return StepBatch(
            overlay_rows(xs, torch.cat([ys, wrong]), c, cfg["on_value"]),
            hi - lo,
            xs,
            ys,
            centered,
            feats,
            outputs,
        )

    def _head_features(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return head_features(
            self.model,
            images,
            self.head.layers,
            on_value=cfg["on_value"],
            neutral_value=cfg["neutral_value"],
            supervised=self.supervised,
        )

    def train_step(self, x: torch.Tensor, y: torch.Tensor, train_layers=None) -> dict:
        """One optimizer step on the global batch ``x [B, D]``, ``y [B]`` (on the model's device).

        Returns ``{"losses": {layer: detached loss}, "head_loss": detached tensor or None}``."""
        if self.supervised:
            check_labels("FFTrainer.train_step", y, x.shape[0], self.model.num_classes, x.device)
        return self._checked_step(x, y, train_layers)

    def _checked_step(self, x, y, train_layers) -> dict:
        """train_step on labels validated already: eager, or replayed from a CUDA graph."""
        train_layers = list(range(len(self.model.layers))) if train_layers is None else list(train_layers)
        with labels_range_checked():
            out = self._graphs(x, y, train_layers) if self._graphs is not None else self._step(x, y, train_layers)
        self.global_step += 1
        return out

    def _step(self, x: torch.Tensor, y: torch.Tensor, train_layers: list[int]) -> dict:
        """The step itself: no host reads of device values, so that it can be captured."""
        cfg = self.config
        top = max(train_layers) + 1 if cfg["mode"] == "greedy" else None
        batch = self.make_batch(x, y, num_layers=top)
        losses, _ = layer_losses(
            self.model,
            batch.rows,
            batch.n_pos,
            mode=cfg["mode"],
            collab_layers=cfg["collab_layers"],
            train_layers=train_layers,
            backward=cfg["backward"],
            modules=self._layer_modules,
            centered_goodness=batch.centered,
            collab_weight=cfg["collab_weight"],
            outputs=batch.outputs,
        )
        head_loss = None
        if self.head is not None:
            # the parameters change only at the optimizer steps below: features from make_batch are current
            feats = batch.head_features if batch.head_features is not None else self._head_features(batch.images)
            loss = F.cross_entropy(self._head_module(feats), batch.labels)
            loss.backward()
            head_loss = loss.detach()
        for i in train_layers:
            self.optimizers[i].step()
            self.optimizers[i].zero_grad(set_to_none=True)
        if self.head is not None:
            self.head_optimizer.step()
            self.head_optimizer.zero_grad(set_to_none=True)
        return {"losses": losses, "head_loss": head_loss}

    # ---- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images, method: str = "goodness", num_layers: int | None = None) -> torch.Tensor:
        """Predicted labels for ``images`` (``"goodness"`` or ``"head"``), see ffops.ff.predict."""
        x = torch.as_tensor(images).reshape(len(images), -1).to(self.model.device, self.model.dtype)
        cfg = self.config
        return predict(
            self.model,
            x,
            method,
            head=self.head,
            on_value=cfg["on_value"],
            neutral_value=cfg["neutral_value"],
            skip_first=cfg["skip_first"],
            supervised=self.supervised,
            chunk_size=cfg["chunk_size"],
            num_layers=num_layers,
        )

    def methods(self) -> list[str]:
        return (["goodness"] if self.supervised else []) + (["head"] if self.head is not None else [])

    @torch.no_grad()
    def evaluate(self, images, labels, num_layers: int | None = None) -> dict:
        """Error rates (fractions) ``{"error_goodness": ..., "error_head": ...}``; with ``ddp=True`` each
        rank scores its share of the samples and the counts are summed over ranks (with ``ddp=False``,
        process group or not, this process scores every sample)."""
        model = self.model
        x, y, _ = _as_data(
            "FFTrainer.evaluate",
            "images",
            images,
            "labels",
            labels,
            model.num_classes,
            model.in_features,
            model.device,
            model.dtype,
        )
        lo, hi = distributed.shard_bounds(x.shape[0], self.rank, self.world_size, exact=False)
        wrong = torch.zeros(len(self.methods()), dtype=torch.float64, device=model.device)
        for k, method in enumerate(self.methods()):
            wrong[k] = (self.predict(x[lo:hi], method, num_layers) != y[lo:hi]).sum()
        if self.config["ddp"]:  # without ddp every rank scored every sample
            distributed.all_reduce_sum(wrong)
        return {f"error_{m}": float(wrong[k]) / max(x.shape[0], 1) for k, m in enumerate(self.methods())}

    # ---- the loop --------------------------------------------------------------------------------
    def fit(
        self,
        train_images,
        train_labels,
        *,
        test_images=None,
        test_labels=None,
        epochs: int = 30,
        batch_size: int = 100,
        eval_every: int = 1,
        start_epoch: int = 0,
    ) -> list:
        """Train for ``epochs`` (greedy: per layer, one layer after the other), ``batch_size`` positive
        samples (global, over all ranks) per step; the last partial batch of each epoch is dropped.

        ``start_epoch`` resumes an interrupted ``fit`` (e.g. from a checkpoint saved after each epoch):
        the first ``start_epoch`` epochs of the schedule (greedy: counted over the phases in order) are
        taken as done, and training goes on with the learning rates they would have been given.

        Appends to and returns ``self.history``: per epoch a dict with ``phase`` (greedy: the
        learning layer, else None), ``epoch`` (1-based, within the phase), ``loss`` (mean per layer,
        None for layers not learning; of the global batches, under DDP too), ``head_loss``, ``lr``,
        ``time_s`` (training only),
        ``samples_per_s``, ``train_error_goodness`` / ``train_error_head`` (fractions, on a fixed
        ``eval_train_samples`` subset), ``test_error_*`` (when test data is given), ``eval_time_s``,
        and ``goodness``: per layer ``{"layer", "edges", "pos", "neg", "pos_mean", "neg_mean"}``,
        histogram counts of positive / negative goodness (bins: ffops.ff.stats).
        Errors are evaluated every ``eval_every`` epochs and after the last."""
        model, cfg, op = self.model, self.config, "FFTrainer.fit"
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_every", eval_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{op}: {name} must be an int >= 1, got {value!r}")
        phases = [[i] for i in range(len(model.layers))] if cfg["mode"] == "greedy" else [None]
        total = len(phases) * epochs
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or not 0 <= start_epoch < total:
            raise ValueError(
                f"{op}: start_epoch must be an int in [0, {total}) (epochs done of this schedule), got {start_epoch!r}"
            )
        x, y, shape = _as_data(
            op,
            "train_images",
            train_images,
            "train_labels",
            train_labels,
            model.num_classes,
            model.in_features,
            model.device,
            model.dtype,
        )
        if cfg["image_shape"] is None and shape is not None:
            cfg["image_shape"] = shape
        test = None
        if (test_images is None) != (test_labels is None):
            raise ValueError(f"{op}: give both test_images and test_labels, or neither")
        if test_images is not None:
            test = _as_data(
                op,
                "test_images",
                test_images,
                "test_labels",
                test_labels,
                model.num_classes,
                model.in_features,
                model.device,
                model.dtype,
            )[:2]
        n = x.shape[0]
        steps = n // batch_size
        if steps == 0:
            raise ValueError(f"{op}: batch_size ({batch_size}) exceeds the number of training samples ({n})")
        distributed.shard_bounds(batch_size, self.rank, self.world_size)  # divisibility check
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(cfg["seed"] + 2)).to(x.device)
        train_eval = subset[: cfg["eval_train_samples"] or n]
        hist_idx = subset[: cfg["hist_samples"]]
        for cb in self.callbacks:
            cb.on_fit_start(
                self,
                {
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "steps_per_epoch": steps,
                    "phases": [p and p[0] for p in phases],
                    "start_epoch": start_epoch,
                    "train_samples": n,
                    "world_size": self.world_size,
                },
            )
        for p, train_layers in enumerate(phases):
            phase = None if train_layers is None else train_layers[0]
            num_layers = None if phase is None else phase + 1
            for epoch in range(max(0, start_epoch - p * epochs), epochs):
                for cb in self.callbacks:
                    cb.on_epoch_start(self, {"phase": phase, "epoch": epoch + 1, "epochs": epochs})
                record = self._train_epoch(x, y, batch_size, steps, train_layers, phase, epoch, epochs)
                t1 = time.perf_counter()
                if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                    for split, data in (("train", (x[train_eval], y[train_eval])), ("test", test)):
                        if data is not None:
                            record.update({f"{split}_{k}": v for k, v in self.evaluate(*data, num_layers).items()})
                record["goodness"] = goodness_histograms(
                    self, x[hist_idx], y[hist_idx], bins=cfg["hist_bins"], num_layers=num_layers
                )
                record["eval_time_s"] = time.perf_counter() - t1
                self.history.append(record)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, record)
        for cb in self.callbacks:
            cb.on_fit_end(self, self.history)
        return self.history

    def _train_epoch(self, x, y, batch_size, steps, train_layers, phase, epoch, epochs) -> dict:
        """One pass over a fresh permutation of ``x, y``: the training part of an epoch's record."""
        t0 = time.perf_counter()
        perm = torch.randperm(x.shape[0], generator=self._data_gen).to(x.device)
        loss_sum = torch.zeros(len(self.model.layers), device=x.device, dtype=torch.float64)
        head_sum = torch.zeros((), device=x.device, dtype=torch.float64)
        for s in range(steps):
            if self.config["cooldown"]:  # linear decay to 0 over the second half (of the phase)
                self._set_lr_factor(min(1.0, 2.0 * (1.0 - (epoch * steps + s) / (epochs * steps))))
            idx = perm[s * batch_size : (s + 1) * batch_size]
            out = self._checked_step(x[idx], y[idx], train_layers)  # labels: checked once by fit
            for i, v in out["losses"].items():
                loss_sum[i] += v
            if out["head_loss"] is not None:
                head_sum += out["head_loss"]
            for cb in self.callbacks:
                cb.on_batch_end(
                    self,
                    {
                        "phase": phase,
                        "epoch": epoch + 1,
                        "step": s + 1,
                        "steps": steps,
                        "samples": (s + 1) * batch_size,
                        **out,
                    },
                )
        # each rank's losses are means over its shard: weighted by the shard's share of the global batch
        # and summed over ranks, they are the global batch's means
        lo, hi = distributed.shard_bounds(batch_size, self.rank, self.world_size)
        sums = torch.cat([loss_sum, head_sum[None]]) * ((hi - lo) / batch_size)
        if self.config["ddp"]:
            distributed.all_reduce_sum(sums)
        *losses, head_loss = (sums / steps).tolist()
        train_time = time.perf_counter() - t0
        return {
            "phase": phase,
            "epoch": epoch + 1,
            "loss": [v if phase is None or i == phase else None for i, v in enumerate(losses)],
            "head_loss": head_loss if self.head is not None else None,
            "lr": float(self.optimizers[0].param_groups[0]["lr"]),
            "time_s": train_time,
            "samples_per_s": steps * batch_size / train_time,
        }

    # ---- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything to rebuild and resume: configs, weights, optimizer states, generators, history."""
        return {
            "config": dict(self.config),
            "model_config": dict(self.model.config),
            "model": self.model.state_dict(),
            "head": self.head.state_dict() if self.head else None,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "head_optimizer": self.head_optimizer.state_dict() if self.head_optimizer else None,
            "generators": {"noise": self._noise_gen.get_state(), "data": self._data_gen.get_state()},
            "global_step": self.global_step,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.head is not None and state.get("head") is not None:
            self.head.load_state_dict(state["head"])
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        if self.head_optimizer is not None and state.get("head_optimizer") is not None:
            self.head_optimizer.load_state_dict(state["head_optimizer"])
        if self._graphs is not None:  # the graphs hold the old optimizer state's addresses
            for opt in self._all_optimizers():
                capturable_optimizer_groups(opt, self.model.device)
            self._graphs.reset()
        self._noise_gen.set_state(state["generators"]["noise"].cpu())
        self._data_gen.set_state(state["generators"]["data"].cpu())
        self.global_step, self.history = state["global_step"], list(state["history"])


def train(
    model,
    train_images,
    train_labels,
    *,
    test_images=None,
    test_labels=None,
    epochs: int = 30,
    batch_size: int = 100,
    model_kwargs=None,
    **trainer_kwargs,
) -> FFTrainer:
    """Build (``model`` may be a list of sizes, with ``model_kwargs`` for FFNet) and fit a trainer;
    returns it (``trainer.history`` holds the per-epoch records)."""
    if not isinstance(model, FFNet):
        model = FFNet(model, **(model_kwargs or {}))
    elif model_kwargs:
        raise ValueError("train: model_kwargs only applies when model is a list of sizes")
    trainer = FFTrainer(model, **trainer_kwargs)
    trainer.fit(
        train_images,
        train_labels,
        test_images=test_images,
        test_labels=test_labels,
        epochs=epochs,
        batch_size=batch_size,
    )
    return trainer
