"""What ``ffops.memory.patch`` does to each architecture family, built from tiny configs (random weights,
nothing downloaded; benchmarks/patch_model_zoo.py): the norms it folds (and why it skips the others), the
activations it replaces, and the bytes saved for backward after / before on the same inputs, in float32
and under bfloat16 autocast. Plus Llama + LoRA (peft, every projection, r 8) with and without
``lora_dropout=0.05``, in both orders (``get_peft_model`` then ``patch``; ``patch`` then ``get_peft_model``).

Run from the repository root::

    python -m benchmarks.bench_patch_models            # every model whose package is installed

``patch`` runs as a user would call it: without ``example_inputs`` (Hugging Face models get inputs
from their config; timm models fall back to torch.fx), gradient checkpointing off (it saves the layers'
activations by recomputing them, so the ratios would be those of what little stays). The bytes are
``ffops.memory.saved_bytes`` of one forward on the inputs patch built (timm: a [2, 3, 32, 32] image),
the unpatched model a copy taken before patching. Results:
``benchmarks/results/bench_patch_models_<device>.json`` and ``.md``.
"""

import copy
import os
import time
import warnings

import torch

from benchmarks import harness
from benchmarks.patch_model_zoo import ARCHITECTURES, IMAGE_SIZE, build
from ffops.memory import patch, saved_bytes
from ffops.memory.patch import _hf_example_inputs

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _inputs(name, model):
    if ARCHITECTURES[name][0] == "timm":
        return (torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)),)
    return _hf_example_inputs(model)[0]


def _call(model, inputs):
    return model(**inputs) if isinstance(inputs, dict) else model(*inputs)


def _saved(model, inputs, autocast):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return saved_bytes(lambda: _call(model, inputs))


def _row(label, original, patched_model, report, inputs, seconds):
    norms = len(report.folded) + sum(1 for _, kind, _ in report.skipped if "Norm" in kind)
    lora = sum(1 for _, old, _ in report.replaced if old == "Linear after Dropout")
    row = {
        "model": label,
        "norms": norms,
        "folded": len(report.folded),
        "activations_replaced": len(report.replaced) - len(report.folded) - lora,
        "lora_dropouts_fused": lora,
        "skipped": [f"{name} ({kind}): {why}" for name, kind, why in report.skipped],
        "consumer_analysis": report.consumer_analysis,
        "example_inputs": report.example_inputs or "none (built here for the measurement)",
        "patch_seconds": round(seconds, 2),
    }
    for key, autocast in (("fp32", False), ("bf16_autocast", True)):
        before, after = _saved(original, inputs, autocast), _saved(patched_model, inputs, autocast)
        row[f"saved_bytes_{key}"] = [before, after]
        row[f"ratio_{key}"] = round(after / before, 3)
    return row


def _patch_timed(model):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = patch(model)
    return report, time.perf_counter() - start


def model_rows():
    rows = []
    for name, (package, *_) in ARCHITECTURES.items():
        try:
            __import__(package)
        except ImportError:
            print(f"{name}: {package} is not installed, skipped")
            continue
        torch.manual_seed(0)
        model = build(name, checkpointing=False)
        original = copy.deepcopy(model)
        inputs = _inputs(name, model)
        report, seconds = _patch_timed(model)
        rows.append(_row(name, original, model, report, inputs, seconds))
        print(_line(rows[-1]))
    return rows


def lora_rows():
    try:
        import peft
    except ImportError:
        print("peft is not installed: no LoRA rows")
        return []

    def lora(model, dropout):
        cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=LORA_TARGETS)
        return peft.get_peft_model(model, cfg)

    rows = []
    for dropout in (0.0, 0.05):
        for order in ("peft, patch", "patch, peft", "patch, peft, patch"):
            torch.manual_seed(0)
            original = lora(build("llama", checkpointing=False), dropout)
            torch.manual_seed(0)
            model = build("llama", checkpointing=False)
            inputs = _inputs("llama", model)
            if order == "peft, patch":
                model = lora(model, dropout)
                report, seconds = _patch_timed(model)
            else:
                report, seconds = _patch_timed(model)
                model = lora(model, dropout)
                if order == "patch, peft, patch":
                    again, more = _patch_timed(model)
                    report.replaced += again.replaced
                    seconds += more
            rows.append(_row(f"llama + LoRA (dropout {dropout}): {order}", original, model, report, inputs, seconds))
            print(_line(rows[-1]))
    return rows


def _line(row):
    return (
        f"{row['model']}: folded {row['folded']}/{row['norms']} norms, {row['activations_replaced']} activations, "
        f"{row['lora_dropouts_fused']} LoRA dropouts fused; "
        f"saved bytes {row['ratio_fp32']:.3f}x (fp32), {row['ratio_bf16_autocast']:.3f}x (bf16 autocast)"
    )


def markdown(rows, meta):
    lines = [
        "# ffops.memory.patch on tiny models built from config",
        "",
        f"{meta['date']}, {harness.machine_line(meta)}, torch {meta['torch']}; transformers "
        f"{meta.get('transformers')}, peft {meta.get('peft')}, timm {meta.get('timm')}. "
        "Saved bytes for backward after / before patching, one forward on the inputs patch built "
        "(timm: [2, 3, 32, 32]); gradient checkpointing off. `python -m benchmarks.bench_patch_models`.",
        "",
        "| model | norms folded | activations | LoRA dropouts fused | saved fp32 | saved bf16 autocast | consumers |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        how = "fx" if "fx" in r["consumer_analysis"] else "trace" if r["consumer_analysis"] else "-"
        lines.append(
            f"| {r['model']} | {r['folded']} / {r['norms']} | {r['activations_replaced']} | "
            f"{r['lora_dropouts_fused']} | {r['ratio_fp32']:.3f}x | {r['ratio_bf16_autocast']:.3f}x | {how} |"
        )
    lines += ["", "## Skipped, with the reasons", ""]
    for r in rows:
        lines += [f"- {r['model']}: {s}" for s in r["skipped"]]
    return "\n".join(lines) + "\n"


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    device = torch.device("cpu")
    meta = harness.metadata(device)
    for lib in ("transformers", "peft", "timm"):
        try:
            meta[lib] = __import__(lib).__version__
        except ImportError:
            meta[lib] = None
    print(f"bench_patch_models: {harness.machine_line(meta)}, torch {meta['torch']}, ffops {meta['ffops']}", flush=True)
    rows = model_rows() + lora_rows()
    path = harness.write_json(harness.results_path("bench_patch_models", device), {"metadata": meta, "rows": rows})
    path.with_suffix(".md").write_text(markdown(rows, meta))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
