"""Forward-Forward training on ffops' fused layers.

* ``FFNet(sizes, ...)``: a stack of ffops.nn.FFLinear layers, e.g. ``FFNet([784, 500, 500])``.
* ``FFConvNet(in_channels, channels)``: conv FF blocks with the channel-wise competitive loss
  (``CwCBlock``; CwComp, AAAI 2024), block-local, no negatives; ``predict`` by summed group goodness,
  the last block's, or a local softmax head; ``ConvFFTrainer`` trains it (augmentation: ``augment``).
* ``FFTrainer(model, mode=..., negatives=...)`` with ``fit(...)`` / ``evaluate`` / ``predict`` and
  ``Callback`` hooks; ``train(sizes_or_model, images, labels, ...)`` builds and fits one;
  ``cuda_graph=True`` / ``"auto"`` replays each step from a CUDA graph (``ffops.ff.cuda_graph``).
* Labels and negatives: ``overlay_labels``, ``neutral_overlay``, ``random_wrong_labels``,
  ``hard_wrong_labels``, ``hybrid_images``.
* Prediction: ``goodness_per_label`` / ``predict`` (goodness over all labels in one batched pass, or
  a ``LinearHead`` on neutral-label activities); ``layer_goodness_per_label``: per layer.
* ``saved_bytes_per_step``: the peak memory saved for backward in one step (flat in depth).
* ``save_checkpoint`` / ``load_checkpoint``; DDP helpers in ``ffops.ff.distributed``.
"""

from ffops.ff.augment import augment, random_crop, random_hflip
from ffops.ff.checkpoint import load_checkpoint, save_checkpoint
from ffops.ff.conv import CwCBlock, FFConvNet
from ffops.ff.conv_train import ConvFFTrainer
from ffops.ff.labels import neutral_overlay, overlay_all_labels, overlay_labels, overlay_rows
from ffops.ff.model import FFNet, default_threshold
from ffops.ff.negatives import (
    gumbel_noise,
    hard_wrong_labels,
    hybrid_images,
    hybrid_mask,
    random_wrong_labels,
)
from ffops.ff.predict import LinearHead, goodness_per_label, head_features, layer_goodness_per_label, predict
from ffops.ff.step import layer_losses
from ffops.ff.step_memory import saved_bytes_per_step
from ffops.ff.train import Callback, FFTrainer, train
from ffops.nn.ff import OverlayRows

__all__ = [
    "Callback",
    "ConvFFTrainer",
    "CwCBlock",
    "FFConvNet",
    "FFNet",
    "FFTrainer",
    "LinearHead",
    "OverlayRows",
    "augment",
    "default_threshold",
    "goodness_per_label",
    "gumbel_noise",
    "hard_wrong_labels",
    "head_features",
    "hybrid_images",
    "hybrid_mask",
    "layer_goodness_per_label",
    "layer_losses",
    "load_checkpoint",
    "neutral_overlay",
    "overlay_all_labels",
    "overlay_labels",
    "overlay_rows",
    "predict",
    "random_crop",
    "random_hflip",
    "random_wrong_labels",
    "save_checkpoint",
    "saved_bytes_per_step",
    "train",
]
