"""``ffops.memory.patch(model)``: memory-saving activations and MS norms in an existing model.

* Activations: ``nn.GELU`` / ``nn.SiLU``, Hugging Face's GELU / SiLU activation classes and timm's GELU become
  ``ReGELU2`` / ``ReSiLU2`` (``activations="regelu2"``) or ``FewBitAct(fn, k)``
  (``activations="fewbit:k"``, which also takes torch's Tanh, Sigmoid, Softplus, ELU, CELU, Mish,
  Hardswish, LeakyReLU, SELU, LogSigmoid, Softsign and ReLU6 with their default parameters). Each
  candidate is first checked numerically to compute the function its class name promises. With
  ``calibrate=inputs`` each Few-Bit layer gets its own table, fitted to the inputs it sees on them
  (ffops.memory.fewbit_calibration).
* Norms: ``nn.LayerNorm``, ``nn.RMSNorm`` and any ``*Norm`` class recognised by its math on a probe
  (LayerNorm or RMS form, scaled by ``weight`` or ``1 + weight``: Hugging Face's ``*RMSNorm``, T5's
  ``T5LayerNorm``, Gemma's) become ``MSLayerNorm`` / ``MSRMSNorm`` with their affine folded (in
  float64) into the linear layers that consume them: ``W' = W diag(gamma)``, ``b' = b + W beta``
  (``nn.Linear``, and Hugging Face's ``Conv1D`` of GPT-2 whose weight is ``[in, out]``). Only when
  every use of the norm's output is proven to be such a layer (ffops.memory.consumers), directly or
  through dropout (which commutes with the scale but not with a bias: only bias-free norms fold
  through it): by tracing torch calls on example inputs (built from the config for Hugging Face
  models: token ids, images, Whisper's log-mel features, plus decoder token ids for encoder-decoder
  models), or by ``torch.fx`` when no inputs are available. A norm over the channels of
  ``[N, C, H, W]`` (timm's ``LayerNorm2d``) folds into the unpadded ``nn.Conv2d`` layers its output
  feeds directly (ConvNeXt's downsampling) and becomes a ``ChannelsFirstNorm``. Norms feeding anything
  else (post-LN residuals, attention modules with their own projections, padded convolutions, model
  outputs) stay as they are.
* LoRA (peft): each vanilla adapter's ``lora_A(lora_dropout(x))`` becomes one ``DropoutLinear``
  (ffops.memory.lora) that saves no dropped copy of ``x`` and no mask. The order matters for what is
  saved: ``get_peft_model`` then ``patch`` folds each RMS norm into the base projections and the
  ``lora_A`` layers (through the dropout) and fuses the dropouts; ``patch`` then ``get_peft_model``
  folds the norms before peft exists (its ``lora_A`` then learn on the normalized, unscaled input)
  but leaves peft's dropouts, each saving a copy: call ``patch`` once more after ``get_peft_model`` to
  fuse them. Tiny Llama + LoRA (r 8, every projection, float32, 64 tokens): without dropout both
  orders save 0.79x of the unpatched model's bytes; with ``lora_dropout=0.05`` peft-then-patch saves
  0.48x of the unpatched dropout model's (the same bytes as without dropout), patch-then-peft 0.93x
  (0.48x after patching again).

``ffops.memory.unpatch(model)`` undoes it after training (ffops.memory.unpatch).

The returned ``PatchReport`` lists what was replaced or folded, what was skipped and why, the
outputs' largest difference before / after on the example inputs, and the bytes saved for
backward on them before and after (the expected saving; it scales with the number of tokens).
"""

import dataclasses
import inspect
import itertools
import re
import typing
import warnings

import torch
from torch import nn

from ffops.memory import consumers as cons
from ffops.memory.fewbit_calibration import fewbit_table, record_inputs, table_errors
from ffops.memory.lora import DropoutLinear, lora_dropouts
from ffops.memory.measure import saved_bytes
from ffops.nn.memory import FewBitAct, MSLayerNorm, MSRMSNorm, RandomizedLinear, ReGELU2, ReSiLU2
from ffops.reference import ms_norm as ms_norm_ref
from ffops.reference import packed_act as packed_act_ref

_HF_GELU = {
    "GELU": "gelu",  # timm's own (timm.layers.GELU), not an nn.GELU
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
}
_HF_SILU = {"SiLUActivation": "silu", "SiLU": "silu"}
_GELU_SILU = ("gelu", "gelu_tanh", "silu")
# torch's activation modules that Few-Bit replaces, with the parameters its functions have
_TORCH_ACTS = {
    nn.Tanh: ("tanh", {}),
    nn.Sigmoid: ("sigmoid", {}),
    nn.Mish: ("mish", {}),
    nn.Hardswish: ("hardswish", {}),
    nn.SELU: ("selu", {}),
    nn.LogSigmoid: ("logsigmoid", {}),
    nn.Softsign: ("softsign", {}),
    nn.ReLU6: ("relu6", {}),
    nn.Softplus: ("softplus", {"beta": 1.0, "threshold": 20.0}),
    nn.ELU: ("elu", {"alpha": 1.0}),
    nn.CELU: ("celu", {"alpha": 1.0}),
    nn.LeakyReLU: ("leaky_relu", {"negative_slope": 0.01}),
}


@dataclasses.dataclass
class Fold:
    """One folded norm, for ``ffops.memory.unpatch``: the original module, the scale and shift folded
    (float64, ``1 + weight`` for Gemma-style norms) and each linear with whether patch gave it its bias."""

    name: str
    original: nn.Module
    gamma: torch.Tensor | None
    beta: torch.Tensor | None
    linears: list


_PATCH_CALLS = itertools.count()


@dataclasses.dataclass
class PatchRecord:
    """What one ``patch`` call changed (kept on the model it patched as ``model._ffops_patch``): (original,
    new) module swaps and the folds; ``serial`` orders the calls (a model patched, wrapped by peft and
    patched again holds records on two modules)."""

    swaps: list
    folds: list
    serial: int = dataclasses.field(default_factory=lambda: next(_PATCH_CALLS))


@dataclasses.dataclass
class PatchReport:
    """What ``patch`` did. ``replaced``: (module name, old class, new module); ``folded``: norm name ->
    the linear layers that took its affine; ``skipped``: (module name, class, reason); ``calibrated``:
    activation name -> (samples recorded, derivative error of its fitted table, of the N(0, 1) table),
    the errors relative and measured on the recorded samples."""

    replaced: list = dataclasses.field(default_factory=list)
    folded: dict = dataclasses.field(default_factory=dict)
    skipped: list = dataclasses.field(default_factory=list)
    calibrated: dict = dataclasses.field(default_factory=dict)
    consumer_analysis: str = ""
    example_inputs: str = ""
    notes: list = dataclasses.field(default_factory=list)
    max_abs_diff: float | None = None
    tolerance: float | None = None
    saved_bytes_before: int | None = None
    saved_bytes_after: int | None = None

    @property
    def saving_bytes(self) -> int | None:
        if self.saved_bytes_before is None or self.saved_bytes_after is None:
            return None
        return self.saved_bytes_before - self.saved_bytes_after

    def __str__(self) -> str:
        lines = [
            f"ffops.memory.patch: {len(self.replaced)} modules replaced, {len(self.folded)} norms folded, "
            f"{len(self.skipped)} skipped"
        ]
        lines += [f"  replaced {name}: {old} -> {new}" for name, old, new in self.replaced]
        lines += [f"  folded   {norm} into {', '.join(sorted(lins))}" for norm, lins in self.folded.items()]
        lines += [f"  skipped  {name} ({kind}): {why}" for name, kind, why in self.skipped]
        lines += [
            f"  calibrated {name} on {n} inputs: derivative error {fit:.4f} (N(0, 1) table: {unit:.4f})"
            for name, (n, fit, unit) in self.calibrated.items()
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.consumer_analysis:
            lines.append(f"  consumers of norms: {self.consumer_analysis}")
        if self.max_abs_diff is not None:
            lines.append(
                f"  outputs before/after on {self.example_inputs}: max |diff| {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:.3g})"
            )
        if self.saving_bytes is not None:
            b, a = self.saved_bytes_before, self.saved_bytes_after
            pct = 100.0 * (b - a) / b if b else 0.0
            lines.append(
                f"  saved for backward on {self.example_inputs}: {b / 2**20:.2f} MiB -> {a / 2**20:.2f} MiB "
                f"({pct:.0f}% less; scales with the number of tokens)"
            )
        return "\n".join(lines)


def _parse_activations(activations):
    if activations is None:
        return None
    if activations in ("regelu2", "approx"):
        return ("approx", 2)
    if isinstance(activations, str) and activations.startswith("fewbit:"):
        bits = activations.split(":", 1)[1]
        if bits.isdigit() and 1 <= int(bits) <= 4:
            return ("fewbit", int(bits))
    raise ValueError(f"ffops.memory.patch: activations must be None, 'regelu2' or 'fewbit:<1..4>', got {activations!r}")


def _parse_linears(linears):
    if linears is None:
        return None
    if isinstance(linears, str) and linears.startswith("rmm:"):
        try:
            ratio = float(linears.split(":", 1)[1])
        except ValueError:
            ratio = None
        if ratio is not None and 0 < ratio <= 1:
            return ratio
    raise ValueError(f"ffops.memory.patch: linears must be None or 'rmm:<ratio in (0, 1]>', got {linears!r}")


def _linear_selected(linear_filter, name: str, m: nn.Module) -> bool:
    if linear_filter is None:
        return True
    if isinstance(linear_filter, str):
        return re.search(linear_filter, name) is not None
    return bool(linear_filter(name, m))


def _new_activation(kind: str, mode, table=None) -> nn.Module:
    if mode[0] == "fewbit":
        return FewBitAct(kind, mode[1], table)
    return ReSiLU2() if kind == "silu" else ReGELU2("none" if kind == "gelu" else "tanh")


# ---- candidates -------------------------------------------------------------------------------


def _probe(module: nn.Module, k: int) -> torch.Tensor:
    p = next(iter(module.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(1234)
    return (torch.randn(4, k, generator=gen, dtype=torch.float64) * 2 + 0.3).to(device=device, dtype=dtype)


def _activation_kind(m: nn.Module, mode) -> str | None:
    """The activation ``m`` computes (a name of ffops.fewbit's), None if not a target of ``mode``, or
    ``"skip:<reason>"`` / ``"unverified:<fn>"``."""
    if mode[0] == "fewbit":
        for cls, (kind, defaults) in _TORCH_ACTS.items():
            if isinstance(m, cls):
                other = {k: getattr(m, k) for k, v in defaults.items() if getattr(m, k) != v}
                if other:
                    params = ", ".join(f"{k}={v!r}" for k, v in other.items())
                    return f"skip:{params}; ffops' {kind} has {', '.join(f'{k}={v}' for k, v in defaults.items())}"
                return kind
    if isinstance(m, nn.GELU):
        return "gelu" if m.approximate == "none" else "gelu_tanh"
    if isinstance(m, nn.SiLU):
        return "silu"
    name = type(m).__name__
    kind = _HF_GELU.get(name) or _HF_SILU.get(name)
    if kind is None:
        return None
    x = _probe(m, 64)  # a class named like GELU must compute it
    with torch.no_grad():
        expected = packed_act_ref.ACTIVATIONS[kind](x.double())
        try:
            out = m(x).double()
        except Exception:  # any failure on the probe: not proven
            return f"unverified:{kind}"
        ok = out.shape == expected.shape and torch.allclose(
            out, expected, rtol=1e-2 if x.dtype != torch.float32 else 1e-5, atol=1e-5
        )
    return kind if ok else f"unverified:{kind}"


# torch's norms that do not normalize each row's last dimension
_OTHER_TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)


class _Spec(typing.NamedTuple):
    center: bool
    eps: float | None
    gamma: torch.Tensor | None
    beta: torch.Tensor | None
    features: int
    channels_first: bool  # normalizes dimension 1 of [N, C, H, W] (timm's LayerNorm2d)


def _norm_spec(m: nn.Module):
    """The ``_Spec`` of a norm over the last dimension or over the channels of ``[N, C, H, W]``, or a skip
    reason (str).

    torch's LayerNorm / RMSNorm (and subclasses) are checked against their own form; any other class
    whose name ends in ``Norm`` is recognised by its math on a probe: LayerNorm or RMS form, scaled by
    ``weight`` or by ``1 + weight`` (Gemma), whatever the name says (T5's ``T5LayerNorm`` is an RMS norm).
    A norm that fails on ``[rows, features]`` is probed channels-first.
    """
    name = type(m).__name__
    if isinstance(m, (MSLayerNorm, MSRMSNorm, ChannelsFirstNorm, *_OTHER_TORCH_NORMS)):  # patched, or no row norm
        return None
    if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
        if len(m.normalized_shape) != 1:
            return f"normalizes over {tuple(m.normalized_shape)}, more than the last dimension"
        eps, k = m.eps, m.normalized_shape[0]
        forms = [(isinstance(m, nn.LayerNorm), m.weight, getattr(m, "bias", None))]
    elif name.endswith("Norm"):
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 1:
            return "no 1-D weight to fold"
        eps = next(
            (getattr(m, a) for a in ("variance_epsilon", "eps", "epsilon") if isinstance(getattr(m, a, None), float)),
            None,
        )
        if eps is None:
            return "its eps is not an attribute (variance_epsilon / eps)"
        k = w.shape[0]
        b = getattr(m, "bias", None)
        b = b if isinstance(b, torch.Tensor) else None
        forms = [(center, gamma, b) for center in (False, True) for gamma in (w, 1 + w.detach())]
    else:
        return None
    x = _probe(m, k)
    tol = 1e-4 if x.dtype in (torch.float32, torch.float64) else 3e-2
    for channels_first in (False, True):
        probe = x.reshape(1, 4, 1, k).permute(0, 3, 1, 2).contiguous() if channels_first else x  # [1, k, 4, 1]
        try:
            with torch.no_grad():
                out = m(probe).double()
        except Exception:  # e.g. timm's LayerNorm2d permutes a channels-first input
            continue
        if channels_first:
            out = out.permute(0, 2, 3, 1).reshape(x.shape)
        for center, gamma, beta in forms:
            y = ms_norm_ref.ms_norm_fwd(x.double(), ms_norm_ref.rms_eps(eps, x.dtype), center)[0]
            expected = y * (1 if gamma is None else gamma.double()) + (0 if beta is None else beta.double())
            if out.shape == expected.shape and torch.allclose(out, expected, rtol=tol, atol=tol):
                return _Spec(center, eps, gamma, beta, k, channels_first)
    return (
        "its output on a probe is neither (x - mean) / std * weight + bias nor the RMS form, over the last "
        "dimension or the channels of [N, C, H, W]: unverified formula"
    )


class ChannelsFirstNorm(nn.Module):
    """An MS norm over the channels of ``[N, C, H, W]`` (what a channels-first LayerNorm, timm's
    ``LayerNorm2d``, becomes): it normalizes a channels-last view and returns a channels-first view of its
    output, so the convolution after it saves the same storage."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# ---- the edits -----------------------------------------------------------------------------------


def _set_module(model: nn.Module, target: nn.Module, new: nn.Module) -> None:
    """Replace every registration of ``target`` in ``model`` by ``new``."""
    for parent in model.modules():
        for key, child in list(parent._modules.items()):
            if child is target:
                parent._modules[key] = new


def _fold(spec: _Spec, linears: list, undo: list) -> None:
    """``W' = W diag(gamma)``, ``b' = b + W beta`` in float64 (a ``Conv1D``'s weight is ``[in, out]``; a
    convolution's input channels are its weight's dimension 1, and beta meets the sum over its kernel)."""
    gamma, beta = spec.gamma, spec.beta
    if gamma is None and beta is None:
        return
    with torch.no_grad():
        for lin in linears:
            w64 = _weight_out_in(lin)
            new_b = None
            if beta is not None:
                w_beta = (w64.sum((2, 3)) if w64.dim() == 4 else w64) @ beta.double()
                new_b = w_beta + (0 if lin.bias is None else lin.bias.double())
            undo.append(
                (
                    lin,
                    lin.weight.detach().clone(),
                    None if lin.bias is None else lin.bias.detach().clone(),
                    lin.bias is None,
                )
            )
            if gamma is not None:
                w64 = w64 * gamma.double().view(1, -1, *[1] * (w64.dim() - 2))
                lin.weight.copy_(w64.T if cons.hf_conv1d(lin) else w64)
            if new_b is not None:
                if lin.bias is None:
                    lin.bias = nn.Parameter(new_b.to(lin.weight.dtype), requires_grad=lin.weight.requires_grad)
                else:
                    lin.bias.copy_(new_b)


def _weight_out_in(lin: nn.Module) -> torch.Tensor:
    """The weight in float64 as ``[out, in]`` (``[out, in, kh, kw]`` for a convolution)."""
    w = lin.weight.detach().double()
    return w.T if cons.hf_conv1d(lin) else w


def _restore(model, undo_modules, undo_linears) -> None:
    with torch.no_grad():
        for lin, w, b, had_no_bias in undo_linears:
            lin.weight.copy_(w)
            if had_no_bias:
                lin.bias = None
            elif b is not None:
                lin.bias.copy_(b)
    for old, new in undo_modules:
        _set_module(model, new, old)


# ---- example inputs and checks -------------------------------------------------------------------


def _hf_example_inputs(model: nn.Module):
    """``(inputs, why)``: keyword inputs for a Hugging Face model built from its config (token ids, images,
    Whisper-style log-mel features; decoder token ids for encoder-decoder models), or None and why not
    (empty for a model without a config)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None, ""
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    name = getattr(model, "main_input_name", "input_ids")
    vocab = getattr(cfg, "vocab_size", None)
    mel_bins, frames = getattr(cfg, "num_mel_bins", None), getattr(cfg, "max_source_positions", None)
    if name == "input_ids" and isinstance(vocab, int):
        inputs = {"input_ids": torch.randint(0, vocab, (2, 8), generator=gen).to(device)}
    elif name == "pixel_values" and getattr(cfg, "image_size", None) is not None:
        size = cfg.image_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        x = torch.randn(2, getattr(cfg, "num_channels", 3), h, w, generator=gen)
        inputs = {"pixel_values": x.to(device=device, dtype=dtype)}
    elif name == "input_features" and isinstance(mel_bins, int) and isinstance(frames, int):
        # Whisper: [batch, mel bins, frames], two convolutions (the second of stride 2) to max_source_positions
        x = torch.randn(2, mel_bins, 2 * frames, generator=gen)
        inputs = {"input_features": x.to(device=device, dtype=dtype)}
    else:
        return None, f"cannot build example inputs for {type(model).__name__} ({name!r}) from its config"
    if getattr(cfg, "is_encoder_decoder", False) and "decoder_input_ids" in inspect.signature(model.forward).parameters:
        decoder_vocab = getattr(cfg, "decoder_vocab_size", None) or vocab
        if not isinstance(decoder_vocab, int):
            return None, f"cannot build decoder inputs for {type(model).__name__}: its config has no vocab_size"
        inputs["decoder_input_ids"] = torch.randint(0, decoder_vocab, (2, 8), generator=gen).to(device)
    return inputs, ""


def _describe(inputs) -> str:
    shapes = (
        [f"{k}={list(v.shape)}" if isinstance(v, torch.Tensor) else k for k, v in inputs.items()]
        if isinstance(inputs, dict)
        else [str(list(t.shape)) for t in cons._tensors(inputs)]
    )
    return "example inputs " + ", ".join(shapes)


def _outputs(model, inputs):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = cons._call(model, inputs)
    finally:
        model.train(was_training)
    return [t.detach().double() for t in cons._tensors(cons._as_plain(out)) if t.is_floating_point()]


def _saved(model, inputs) -> int:
    with torch.enable_grad():
        return saved_bytes(lambda: cons._call(model, inputs))


# ---- the call ------------------------------------------------------------------------------------


def patch(
    model: nn.Module,
    activations: str | None = "regelu2",
    norms: bool = True,
    *,
    example_inputs=None,
    calibrate=None,
    linears: str | None = None,
    linear_filter=None,
    verify: bool = True,
) -> PatchReport:
    """Put memory-saving activations and MS norms into ``model`` (in place); returns a ``PatchReport``.

    Args:
        activations: ``"regelu2"`` (GELU -> ReGELU2, SiLU -> ReSiLU2), ``"fewbit:k"`` (k = 1..4 bits)
            or None (activations untouched).
        norms: replace norms that feed only linear layers by MS norms, their affine folded into
            those layers.
        example_inputs: a tensor, a tuple of positional arguments or a dict of keyword arguments for
            ``model``; used to trace the consumers of each norm, to check the outputs and to
            measure the saving. Hugging Face models get inputs from their config when not given;
            other models without inputs fall back to ``torch.fx`` for the consumers.
        calibrate: inputs for ``model`` (same forms as example_inputs; real data, e.g. a batch of
            the training set) on which each Few-Bit activation's inputs are recorded (one forward,
            no grad, eval mode) to fit its own table (``ffops.memory.fewbit_table``): borders and
            levels that minimise the derivative's error over what that layer really sees. Needs
            ``activations="fewbit:k"``. The tables live in each ``FewBitAct``'s state_dict entry.
        linears: ``"rmm:<ratio>"`` makes ``nn.Linear`` layers ``RandomizedLinear`` (their backward
            keeps a random sketch of ``ratio`` of the input's rows instead of the input: weight
            gradients become unbiased estimates), or None. A linear whose input is an MS norm's
            output (folded above) is left as it is: that input is saved by the norm anyway, shared,
            so a sketch would add memory; the report says so.
        linear_filter: which linears ``linears`` applies to: a regular expression searched in the
            module name, or a callable ``(name, module) -> bool`` (e.g. by size); default all.
        verify: compare the outputs on the example inputs before and after (raising and undoing
            everything if they differ beyond the dtype's tolerance). Keeps a copy of the folded
            linear weights while it runs.

    Patch before creating the optimizer: a folded linear layer without bias gets a new bias Parameter.
    peft LoRA adapters with dropout get it fused into ``lora_A`` (``DropoutLinear``) whatever the other
    arguments. What was changed is recorded on ``model`` (``model._ffops_patch``) for
    ``ffops.memory.unpatch``, which maps the trained weights back to the original modules.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ffops.memory.patch: model must be a torch.nn.Module, got {type(model).__name__}")
    mode = _parse_activations(activations)
    rmm_ratio = _parse_linears(linears)
    if linear_filter is not None and not (isinstance(linear_filter, str) or callable(linear_filter)):
        raise TypeError(
            f"ffops.memory.patch: linear_filter must be a regular expression or a callable (name, module) -> bool, "
            f"got {type(linear_filter).__name__}"
        )
    if linear_filter is not None and rmm_ratio is None:
        raise ValueError(
            "ffops.memory.patch: linear_filter selects the linears of linears='rmm:<ratio>', got linears=None"
        )
    if calibrate is not None and (mode is None or mode[0] != "fewbit"):
        raise ValueError(
            "ffops.memory.patch: calibrate fits Few-Bit tables: it needs activations='fewbit:<1..4>', "
            f"got {activations!r}"
        )
    report = PatchReport()
    built = example_inputs is None
    if built:
        example_inputs, why = _hf_example_inputs(model)
        if why:
            _warn_no_inputs(report, why)

    acts, norm_specs = {}, {}
    for name, m in model.named_modules():
        if mode is not None:
            kind = _activation_kind(m, mode)
            if kind is not None and kind.startswith("unverified:"):
                report.skipped.append((name, type(m).__name__, f"does not compute {kind.split(':')[1]} on a probe"))
            elif kind is not None and kind.startswith("skip:"):
                report.skipped.append((name, type(m).__name__, kind.split(":", 1)[1]))
            elif kind is not None:
                acts[name] = (m, kind)
        if norms:
            spec = _norm_spec(m)
            if isinstance(spec, str):
                report.skipped.append((name, type(m).__name__, spec))
            elif spec is not None:
                norm_specs[name] = (m, spec)

    found = reference_out = None
    modules = {name: m for name, (m, _) in norm_specs.items()}
    if example_inputs is not None:
        try:  # every first call of the model on the example inputs
            if norm_specs:
                found = cons.trace_with_inputs(model, modules, example_inputs)
                report.consumer_analysis = "traced every torch call of one forward on the example inputs"
            reference_out = _outputs(model, example_inputs) if verify else None
            report.saved_bytes_before = _saved(model, example_inputs)
        except Exception as exc:
            if not built:
                raise ValueError(
                    f"ffops.memory.patch: the model failed on example_inputs ({type(exc).__name__}: {exc})"
                ) from exc
            found = reference_out = example_inputs = None
            _warn_no_inputs(
                report, f"the model failed on the inputs built from its config ({type(exc).__name__}: {exc})"
            )
        else:
            report.example_inputs = _describe(example_inputs)
    if norm_specs and example_inputs is None:
        try:
            found = cons.trace_with_fx(model, modules)
            report.consumer_analysis = "torch.fx symbolic trace of the model"
        except Exception as exc:  # any tracing failure means: no proof
            report.consumer_analysis = f"not analysed: torch.fx could not trace the model ({type(exc).__name__})"
    tied = _tied_parameters(model)
    linears = dict(model.named_modules())

    tables = _calibrated_tables(model, acts, mode, calibrate, report) if calibrate is not None else {}
    undo_modules, undo_linears, folds = [], [], []
    for name, (m, kind) in acts.items():
        new = _new_activation(kind, mode, tables.get(name))
        _set_module(model, m, new)
        undo_modules.append((m, new))
        report.replaced.append((name, type(m).__name__, repr(new)))
    parents = {id(child): type(parent) for parent in model.modules() for child in parent.children()}
    for name, (m, spec) in norm_specs.items():
        if parents.get(id(m)) in (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer):
            report.skipped.append((name, type(m).__name__, "torch's Transformer*Layer reads its norms' weights"))
            continue
        if found is None:
            report.skipped.append((name, type(m).__name__, "consumers not proven: " + report.consumer_analysis))
            continue
        ok, why = found.foldable(name)
        targets = sorted(found.linears.get(name, ()))
        if ok and name in found.through_dropout and spec.beta is not None:
            why = "it reaches its linears through dropout, which drops the bias too: dropout(y + b) != dropout(y) + b"
        elif ok and spec.channels_first and name in found.rearranged:
            why = "it normalizes channels first and its output is rearranged before its convolutions"
        elif ok:
            why = _linear_problem([linears[t] for t in targets], targets, spec, tied)
        if why:
            report.skipped.append((name, type(m).__name__, why))
            continue
        lins = [linears[t] for t in targets]
        added_bias = [spec.beta is not None and lin.bias is None for lin in lins]
        _fold(spec, lins, undo_linears)
        new = MSLayerNorm(spec.features, spec.eps) if spec.center else MSRMSNorm(spec.features, spec.eps)
        new = ChannelsFirstNorm(new) if spec.channels_first else new
        _set_module(model, m, new)
        undo_modules.append((m, new))
        gamma, beta = (None if t is None else t.detach().double().clone() for t in (spec.gamma, spec.beta))
        folds.append(Fold(name, m, gamma, beta, list(zip(lins, added_bias))))
        report.folded[name] = targets
        report.replaced.append((name, type(m).__name__, repr(new)))

    for name, adapter, drop, lora_a in list(lora_dropouts(model)):
        new = DropoutLinear.from_linear(lora_a, drop.p)
        _set_module(model, lora_a, new)
        identity = nn.Identity()
        _set_module(model, drop, identity)
        undo_modules += [(lora_a, new), (drop, identity)]
        report.replaced.append((f"{name}.lora_A.{adapter}", "Linear after Dropout", repr(new)))
    if rmm_ratio is not None:
        _randomize_linears(model, rmm_ratio, linear_filter, report, undo_modules)

    try:
        if example_inputs is not None:
            report.saved_bytes_after = _saved(model, example_inputs)
        after = _outputs(model, example_inputs) if reference_out is not None else None
    except Exception as exc:
        _restore(model, undo_modules, undo_linears)
        raise RuntimeError(
            f"ffops.memory.patch: the patched model failed on the example inputs "
            f"({type(exc).__name__}: {exc}); the model was restored. Report:\n{report}"
        ) from exc
    if reference_out is not None:
        diff, scale = 0.0, 1.0
        for a, b in zip(after, reference_out):
            if a.shape == b.shape and a.numel():
                diff = max(diff, (a - b).abs().max().item())
                scale = max(scale, b.abs().max().item())
        low = any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters())
        report.max_abs_diff, report.tolerance = diff, (5e-2 if low else 1e-3) * scale
        if not (diff <= report.tolerance) or len(after) != len(reference_out):
            _restore(model, undo_modules, undo_linears)
            raise RuntimeError(
                f"ffops.memory.patch: outputs changed by {diff:.3g} (> {report.tolerance:.3g}); "
                f"the model was restored. Report:\n{report}"
            )
    model._ffops_patch = [*getattr(model, "_ffops_patch", []), PatchRecord(undo_modules, folds)]
    return report


def _warn_no_inputs(report: PatchReport, why: str) -> None:
    report.notes.append(f"{why}: pass example_inputs=... to trace the norms' consumers, check and measure")
    warnings.warn(f"ffops.memory.patch: {report.notes[-1]}", stacklevel=3)


def _randomize_linears(model, ratio, linear_filter, report, undo_modules) -> None:
    """nn.Linear -> RandomizedLinear (sharing the Parameters), except the consumers of folded MS norms."""
    shared = {lin: norm for norm, lins in report.folded.items() for lin in lins}
    selected = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    selected = [(name, m) for name, m in selected if _linear_selected(linear_filter, name, m)]
    if not selected and linear_filter is not None:
        report.notes.append(f"linear_filter={linear_filter!r} matches no nn.Linear layer: no linear was randomized")
        warnings.warn(f"ffops.memory.patch: {report.notes[-1]}", stacklevel=3)
    for name, m in selected:
        if name in shared:
            report.skipped.append(
                (
                    name,
                    "Linear",
                    f"its input is MS norm {shared[name]}'s saved output (shared): a sketch would add memory",
                )
            )
            continue
        new = RandomizedLinear.from_linear(m, ratio)
        _set_module(model, m, new)
        undo_modules.append((m, new))
        report.replaced.append((name, "Linear", repr(new)))


def _calibrated_tables(model, acts, mode, calibrate, report) -> dict:
    """name -> the Few-Bit table fitted to that activation's inputs on ``calibrate``."""
    modules = {name: m for name, (m, _) in acts.items()}
    try:
        recorded = record_inputs(model, modules, calibrate)
    except Exception as exc:
        raise RuntimeError(
            f"ffops.memory.patch: the model failed on the calibrate inputs ({type(exc).__name__}: {exc})"
        ) from exc
    tables = {}
    for name, (m, kind) in acts.items():
        samples = recorded.get(name)
        if samples is None:
            report.skipped.append((name, type(m).__name__, "not called on the calibrate inputs: N(0, 1) table"))
            continue
        finite = samples[torch.isfinite(samples)]
        if finite.numel() < samples.numel():
            raise ValueError(
                f"ffops.memory.patch: {name} saw {samples.numel() - finite.numel()} NaN / inf inputs "
                "on the calibrate inputs"
            )
        table = fewbit_table(kind, mode[1], samples)
        tables[name] = table
        report.calibrated[name] = (samples.numel(), *table_errors(table, samples))
    return tables


def _tied_parameters(model: nn.Module) -> set:
    counts: dict = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    return {pid for pid, n in counts.items() if n > 1}


def _linear_problem(lins, names, spec: _Spec, tied) -> str:
    for lin, name in zip(lins, names):
        if cons.plain_conv(lin) != spec.channels_first:
            kind = "convolution" if cons.plain_conv(lin) else "linear layer"
            return (
                f"{name} is a {kind}, the norm normalizes {'channels' if spec.channels_first else 'the last dimension'}"
            )
        if cons.in_features(lin) != spec.features:
            return f"{name} takes {cons.in_features(lin)} features, the norm gives {spec.features}"
        if id(lin.weight) in tied or (lin.bias is not None and id(lin.bias) in tied):
            return f"{name}'s weight is tied to another module's: folding would change both"
    return ""


__all__ = ["PatchReport", "patch"]
