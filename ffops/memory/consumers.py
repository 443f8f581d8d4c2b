"""Which layers consume a norm's output: the proof ``ffops.memory.patch`` needs before it folds a
norm's affine into linear layers.

A norm can be folded only if *every* use of its output is the input of an ``nn.Linear`` or of Hugging
Face's ``Conv1D`` (GPT-2's linear layer, weight ``[in, out]``), possibly through a rearrangement that
keeps the feature dimension last and intact (a view, a reshape to ``[..., features]``, a transpose of
other dims, row slicing, a dtype cast) or through dropout (recorded in ``through_dropout``: it commutes
with a per-feature scale, not with a bias), and every call of those linear layers takes that output.
For a norm over the channels of ``[N, C, H, W]`` the consumers are unpadded ``nn.Conv2d`` layers, which
its output must reach directly (``rearranged`` names the norms whose output was rearranged at all).
Anything else (a residual add, attention modules that own their projections, being a model output)
blocks the fold and is reported. Metadata reads (``.shape``, ``.size()``, ``.dtype``) are no uses.

Two ways to see the uses:

* ``trace_with_inputs``: run the model once on example inputs under a ``TorchFunctionMode`` that
  sees every torch function, method and operator call with its real arguments (forward hooks mark
  each norm's output). Works on any model that runs, including Hugging Face models; it observes
  the control flow taken for these inputs.
* ``trace_with_fx``: ``torch.fx.symbolic_trace`` of the whole model; the graph's users of each
  norm node. Needs no inputs, but many models (Hugging Face ones) do not trace.
"""

import dataclasses
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# Tensor attributes and methods that read metadata only.
_METADATA_ATTRS = {
    "shape",
    "dtype",
    "device",
    "requires_grad",
    "is_cuda",
    "ndim",
    "layout",
    "is_leaf",
    "grad_fn",
    "is_sparse",
    "is_quantized",
    "is_meta",
    "is_nested",
    "names",
    "is_mps",
    "is_xpu",
}
_METADATA_METHODS = {
    "size",
    "dim",
    "numel",
    "stride",
    "is_contiguous",
    "data_ptr",
    "element_size",
    "is_floating_point",
    "get_device",
    "nelement",
    "ndimension",
    "storage_offset",
    "__len__",
    "is_complex",
}
# Rearrangements after which the result still is "the norm's output" row by row (checked: the last
# dimension keeps its size, and transposes / permutes keep it last).
_ALIAS_METHODS = {
    "view",
    "reshape",
    "contiguous",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "transpose",
    "permute",
    "__getitem__",
    "to",
    "float",
    "half",
    "bfloat16",
    "double",
    "type_as",
    "clone",
    "detach",
    "expand",
    "view_as",
    "reshape_as",
}


def plain_linear(m: nn.Module) -> bool:
    """An nn.Linear whose forward is nn.Linear's (so its only use of the weight is F.linear)."""
    return isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward


def hf_conv1d(m: nn.Module) -> bool:
    """Hugging Face's ``transformers.pytorch_utils.Conv1D`` (GPT-2's linear layer: ``addmm(bias, x, weight)``
    with the weight ``[in, out]``), its own forward."""
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(pytorch_utils, "Conv1D", None)
    return conv1d is not None and isinstance(m, conv1d) and type(m).forward is conv1d.forward


def plain_conv(m: nn.Module) -> bool:
    """An nn.Conv2d with nn.Conv2d's forward, no padding and one group: a per-channel scale and shift of
    its input fold into its weight and bias (padding would shift the zeros too)."""
    return (
        isinstance(m, nn.Conv2d)
        and type(m).forward is nn.Conv2d.forward
        and m.groups == 1
        and m.padding in ((0, 0), "valid")
    )


def linear_consumer(m: nn.Module) -> bool:
    """A layer whose input's per-feature scale and shift fold into its weight and bias: a linear layer (on
    the last dimension) or an unpadded convolution (on channels, dimension 1)."""
    return plain_linear(m) or hf_conv1d(m) or plain_conv(m)


def in_features(m: nn.Module) -> int:
    return m.weight.shape[0] if hf_conv1d(m) else m.weight.shape[1]


@dataclasses.dataclass
class Consumers:
    """Per norm name: the linear layers fed by its output, and what else uses it (blockers)."""

    linears: dict = dataclasses.field(default_factory=lambda: defaultdict(set))
    blockers: dict = dataclasses.field(default_factory=lambda: defaultdict(list))
    seen: set = dataclasses.field(default_factory=set)  # norms that ran at all
    through_dropout: set = dataclasses.field(default_factory=set)  # norms whose output reaches a linear via dropout
    rearranged: set = dataclasses.field(default_factory=set)  # norms whose output was viewed / reshaped / cast
    method: str = ""

    def foldable(self, norm: str) -> tuple[bool, str]:
        if norm not in self.seen:
            return (
                False,
                "did not run on the example inputs" if self.method == "trace" else "not in the traced graph",
            )
        if self.blockers.get(norm):
            uses = sorted(set(self.blockers[norm]))
            return False, "its output also feeds " + ", ".join(uses[:4]) + (" ..." if len(uses) > 4 else "")
        if not self.linears.get(norm):
            return False, "its output feeds no linear layer"
        return True, ""


def _last_dim_kept(func_name: str, args, kwargs, src: torch.Tensor, out) -> bool:
    if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[-1] != src.shape[-1]:
        return False
    nd = src.dim()
    if func_name == "transpose":
        dims = [a for a in args[1:3]] if len(args) >= 3 else [kwargs.get("dim0"), kwargs.get("dim1")]
        return all(isinstance(d, int) and d % nd != nd - 1 for d in dims)
    if func_name == "permute":
        dims = args[1:] if len(args) > 1 else kwargs.get("dims", ())
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        return len(dims) == nd and dims[-1] % nd == nd - 1
    if func_name == "__getitem__":
        return _index_keeps_last(args[1], nd)
    return True


def _full_slice(s) -> bool:
    return isinstance(s, slice) and s.start in (None, 0) and s.stop is None and s.step in (None, 1)


def _index_keeps_last(index, nd: int) -> bool:
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        return index[-1] is Ellipsis or _full_slice(index[-1])
    consuming = [i for i in index if i is not None]
    if len(consuming) < nd:
        return not (len(consuming) == 1 and isinstance(consuming[0], torch.Tensor) and consuming[0].dim() > 1)
    return _full_slice(consuming[-1])


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class _UseTracer(TorchFunctionMode):
    def __init__(self, linears: dict, result: Consumers):
        super().__init__()
        self.weights = {id(m.weight): name for name, m in linears.items()}
        self.tracked: dict = {}  # id(tensor) -> (norm name, tensor, "dropout" if it came through one): kept alive
        self.result = result
        self.linear_inputs = defaultdict(set)  # linear name -> norms (or None) whose output it took

    def track(self, t: torch.Tensor, norm: str, via: str = "") -> None:
        self.tracked[id(t)] = (norm, t, via)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        call = _linear_call(func, args, kwargs, self.weights)
        if call is not None:
            x, weight, others = call
            lin = self.weights.get(id(weight))
            src = self.tracked.get(id(x))
            if lin is not None:
                self.linear_inputs[lin].add(src[0] if src else None)
            for t in _tensors(others):
                if id(t) in self.tracked:
                    self.result.blockers[self.tracked[id(t)][0]].append("a linear's weight or bias")
            if src is not None:
                if lin is not None:
                    self.result.linears[src[0]].add(lin)
                else:
                    self.result.blockers[src[0]].append("F.linear with a weight that is no nn.Linear module's")
            return out
        used = [t for t in _tensors((args, kwargs)) if id(t) in self.tracked]
        if not used:
            return out
        owner = getattr(getattr(func, "__self__", None), "__name__", None)
        if (name == "__get__" and owner in _METADATA_ATTRS) or name in _METADATA_METHODS:
            return out
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if func is F.dropout and src is not None and id(src) in self.tracked and len(used) == 1:
            norm, _, via = self.tracked[id(src)]
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            if p:
                self.result.through_dropout.add(norm)
            self.track(out, norm, "dropout" if p else via)
            return out
        if name in _ALIAS_METHODS and src is not None and id(src) in self.tracked and len(used) == 1:
            norm, _, via = self.tracked[id(src)]
            if _last_dim_kept(name, args, kwargs, src, out):
                self.result.rearranged.add(norm)
                self.track(out, norm, via)
                return out
        for t in used:
            norm, _, via = self.tracked[id(t)]
            use = name if owner is None else f"{owner}.{name}"
            self.result.blockers[norm].append(f"{use} (after {via})" if via else use)
        return out


def _linear_call(func, args, kwargs, weights: dict):
    """``(input, weight, the other arguments)`` of ``F.linear``, of ``torch.addmm`` applied by a ``Conv1D``
    (``addmm(bias, x, weight)``) or of ``F.conv2d`` applied by a consumer convolution; None for any other
    call."""
    if func is F.linear:
        x = args[0] if args else kwargs.get("input")
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        return x, weight, (args[1:], kwargs)
    if func is torch.addmm and len(args) >= 3 and id(args[2]) in weights:
        return args[1], args[2], (args[0], args[2:], kwargs)
    if func is F.conv2d and len(args) >= 2 and id(args[1]) in weights:
        return args[0], args[1], (args[1:], kwargs)
    return None


def _call(model, example_inputs):
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def trace_with_inputs(model: nn.Module, norms: dict, example_inputs) -> Consumers:
    """Consumers of each norm in ``norms`` (name -> module) seen in one forward on ``example_inputs``."""
    result = Consumers(method="trace")
    linears = {name: m for name, m in model.named_modules() if linear_consumer(m)}
    tracer = _UseTracer(linears, result)
    handles = []
    for name, module in norms.items():

        def hook(mod, inputs, output, name=name):
            result.seen.add(name)
            if isinstance(output, torch.Tensor):
                tracer.track(output, name)
            else:
                result.blockers[name].append("a non-tensor output")

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), tracer:
            out = _call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    for t in _tensors(_as_plain(out)):
        if id(t) in tracer.tracked:
            result.blockers[tracer.tracked[id(t)][0]].append("the model's output")
    _check_linears_only_take(result, tracer.linear_inputs)
    return result


def _as_plain(out):
    """Model outputs as nested lists / dicts (Hugging Face ModelOutput is a dict)."""
    if isinstance(out, dict):
        return dict(out)
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return out


def _check_linears_only_take(result: Consumers, linear_inputs: dict) -> None:
    """A linear fed by a norm must take nothing else: folding changes it for all of its calls."""
    for norm, lins in list(result.linears.items()):
        for lin in sorted(lins):
            if linear_inputs.get(lin, {norm}) != {norm}:
                result.blockers[norm].append(f"{lin} (which is also applied to other inputs)")


def trace_with_fx(model: nn.Module, norms: dict) -> Consumers:
    """Consumers of each norm in ``norms`` from ``torch.fx.symbolic_trace(model)`` (raises if it does not
    trace): the users of each norm's node, followed through dropout modules, metadata reads ignored."""
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):  # keep each norm and linear a call_module node, whatever its class
            return qualname in norms or linear_consumer(m) or super().is_leaf_module(m, qualname)

    result = Consumers(method="fx")
    gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    modules = dict(gm.named_modules())
    linear_inputs = defaultdict(set)
    norm_nodes = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in norms:
            norm_nodes[node] = node.target
            result.seen.add(node.target)

    def source(node):  # the norm whose output ``node`` is (through dropout modules), or None
        while isinstance(node, torch.fx.Node) and node not in norm_nodes:
            dropout = node.op == "call_module" and isinstance(modules.get(node.target), nn.Dropout)
            node = node.args[0] if dropout and node.args else None
        return norm_nodes.get(node) if isinstance(node, torch.fx.Node) else None

    def follow(node, norm, via):
        for user in node.users:
            target = modules.get(user.target) if user.op == "call_module" else None
            metadata = (user.op == "call_function" and user.target is getattr and user.args[1] in _METADATA_ATTRS) or (
                user.op == "call_method" and user.target in _METADATA_METHODS
            )
            only_input = user.args[:1] == (node,) and node not in user.args[1:] and node not in user.kwargs.values()
            if metadata:
                continue
            if isinstance(target, nn.Dropout) and only_input:
                if target.p:
                    result.through_dropout.add(norm)
                follow(user, norm, "dropout" if target.p else via)
            elif target is not None and linear_consumer(target) and only_input:
                result.linears[norm].add(user.target)
            else:
                use = "the graph output" if user.op == "output" else getattr(user.target, "__name__", str(user.target))
                result.blockers[norm].append(f"{use} (after {via})" if via else use)

    for node in gm.graph.nodes:
        if node.op == "call_module" and linear_consumer(modules.get(node.target)):
            linear_inputs[node.target].add(source(node.args[0]) if node.args else None)
    for node, norm in norm_nodes.items():
        follow(node, norm, "")
    _check_linears_only_take(result, linear_inputs)
    return result
