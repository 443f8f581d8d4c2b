"""``ffops.memory.unpatch(model)``: undo ``ffops.memory.patch`` after training, so that the model has its
original module types again and its trained weights load into the stock model (``save_pretrained``, a
LoRA adapter, a state dict) and give the same outputs.

Each folded norm gets its original module back (its weight and bias as they were when patched: the
fold trained the linears, not the norm) and the linears that took its affine are unfolded:
``W = W' diag(1 / gamma)``, ``b = b' - W beta`` (over a convolution's input channels); so are the
``lora_A`` of LoRA adapters added to those linears after patching (they learned on the normalized
input, before the norm's scale). Replaced
modules (activations, RandomizedLinear, DropoutLinear and its Identity) get their originals back; they
share their Parameters, so those hold the trained values. A norm weight with zero entries cannot be
unfolded (those input columns of the linears are lost), nor can a bias that patch added to a linear
without one once it has been trained, nor a LayerNorm's bias out of a LoRA adapter added after patch:
each is a ValueError raised before anything changes.
"""

import torch
from torch import nn

from ffops.memory import consumers as cons
from ffops.memory.patch import Fold, _set_module, _weight_out_in


def _later_lora_a(model: nn.Module, fold: Fold) -> list:
    """The ``lora_A`` layers of peft adapters wrapped around the fold's linears after patching."""
    folded = {id(lin.weight) for lin, _ in fold.linears}
    bases = {id(lin) for lin, _ in fold.linears}
    found = []
    for wrapper in model.modules():
        lora_a = getattr(wrapper, "lora_A", None)
        if id(getattr(wrapper, "base_layer", None)) in bases and isinstance(lora_a, nn.ModuleDict):
            found += [a for a in lora_a.values() if id(a.weight) not in folded]
    return found


def _unfold(model: nn.Module, fold: Fold) -> list:
    """``(module, weight, bias, drop_bias)`` updates that undo ``fold``; raises ValueError if it cannot be."""
    gamma, beta = fold.gamma, fold.beta
    if gamma is not None and (gamma == 0).any():
        zeros = (gamma == 0).nonzero().flatten().tolist()
        raise ValueError(
            f"ffops.memory.unpatch: cannot unfold {fold.name}: its weight is zero at feature(s) {zeros[:8]}, "
            "so the linears it was folded into lost those input columns"
        )
    updates = []
    for lin, added_bias in fold.linears:
        w = _weight_out_in(lin)
        w = w / (1 if gamma is None else gamma.view(1, -1, *[1] * (w.dim() - 2)))
        bias = None
        if beta is not None:
            trained = lin.bias.detach().double()
            bias = trained - (w.sum((2, 3)) if w.dim() == 4 else w) @ beta
            if added_bias and not torch.allclose(bias, torch.zeros_like(bias), atol=1e-6 * (1 + trained.abs().max())):
                raise ValueError(
                    f"ffops.memory.unpatch: cannot unfold {fold.name}: the bias that patch gave its consumer "
                    f"{type(lin).__name__} (which has none in the stock model) has been trained"
                )
        updates.append((lin, w.T if cons.hf_conv1d(lin) else w, bias, added_bias))
    for lora_a in _later_lora_a(model, fold):
        if beta is not None and beta.any():
            raise ValueError(
                f"ffops.memory.unpatch: cannot unfold {fold.name}: a LoRA adapter added after patching learned "
                "on its normalized input; its bias cannot be taken out of the adapter"
            )
        updates.append((lora_a, _weight_out_in(lora_a) / (1 if gamma is None else gamma[None, :]), None, False))
    return updates


def unpatch(model: nn.Module) -> nn.Module:
    """Undo every ``ffops.memory.patch`` call on ``model`` or a module inside it (in place: a model patched
    and then wrapped by peft can be given as the peft model), mapping the trained weights back to the
    original modules; returns ``model``. See the module docstring."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"ffops.memory.unpatch: model must be a torch.nn.Module, got {type(model).__name__}")
    holders = [m for m in model.modules() if "_ffops_patch" in vars(m)]  # the model, or one it wraps (peft)
    records = sorted((r for m in holders for r in m._ffops_patch), key=lambda r: r.serial)
    if not records:
        raise ValueError(
            "ffops.memory.unpatch: model holds no record of ffops.memory.patch (a model copied with "
            "copy.deepcopy keeps it; one rebuilt from a state dict does not)"
        )
    folds = [fold for record in reversed(records) for fold in reversed(record.folds)]
    plans = [_unfold(model, fold) for fold in folds]  # every check before any change
    with torch.no_grad():
        for updates in plans:
            for module, weight, bias, drop_bias in updates:
                module.weight.copy_(weight)
                if drop_bias:
                    module.bias = None
                elif bias is not None:
                    module.bias.copy_(bias)
    for record in reversed(records):
        for old, new in reversed(record.swaps):
            _set_module(model, new, old)
            old.train(new.training)  # the mode the model was put in since patching
    for fold in folds:  # the original norm follows the model's device and dtype since patching
        weight = fold.linears[0][0].weight
        fold.original.to(device=weight.device, dtype=weight.dtype)
    for m in holders:
        del m._ffops_patch
    return model
