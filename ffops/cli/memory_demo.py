"""``python -m ffops memory-demo``: the memory-saving family on a small Llama-style model.

Builds a 2-layer Llama-style decoder from a config (Hugging Face ``transformers``, no weights
downloaded), patches a copy with ``ffops.memory.patch`` (SiLU -> ReSiLU2, RMSNorm -> MS-RMSNorm
with its weight folded into the next projections) and prints the report: what was replaced or
folded, what was skipped and why, and the bytes saved for backward before / after. Then both
models train the same steps on the same batches of a synthetic language (a seeded random Markov
chain over the vocabulary, so there is something to learn) and the two losses are printed side by
side. Writes ``report.txt`` and ``losses.json`` into ``--out``.
"""

import argparse
import copy
import json
import time
from pathlib import Path

from ffops.cli import args as cli_args
from ffops.cli.args import UsageError

VOCAB = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=cli_args.positive_int, default=30, help="training steps of each model (default 30)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="sequences per step (default 8)")
    p.add_argument("--seq-len", type=cli_args.positive_int, default=128, help="tokens per sequence (default 128)")
    p.add_argument(
        "--activations", default="regelu2", choices=("regelu2", "fewbit:1", "fewbit:2", "fewbit:3", "fewbit:4")
    )
    p.add_argument("--threads", type=cli_args.positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=cli_args.nonnegative_int, default=0)
    p.add_argument("--out", default=None, help="output directory (default: runs/memory-demo-<time>)")


def _language(seed: int):
    """A random sparse Markov chain over the vocabulary: each token has 4 likely successors."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    logits = torch.full((VOCAB, VOCAB), -4.0)
    for t in range(VOCAB):
        logits[t, torch.randperm(VOCAB, generator=gen)[:4]] = 2.0
    return torch.softmax(logits, dim=1), gen


def _batches(steps: int, batch: int, seq: int, seed: int) -> list:
    import torch

    probs, gen = _language(seed)
    out = []
    for _ in range(steps):
        tok = torch.randint(VOCAB, (batch,), generator=gen)
        rows = [tok]
        for _ in range(seq - 1):
            tok = torch.multinomial(probs[tok], 1, generator=gen).squeeze(1)
            rows.append(tok)
        out.append(torch.stack(rows, dim=1))
    return out


def run(args: argparse.Namespace) -> int:
    if not cli_args.has_module("transformers"):
        raise UsageError("needs Hugging Face transformers for its model: pip install transformers")
    import torch
    import transformers

    import ffops

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=args.seq_len,
    )
    plain = transformers.LlamaForCausalLM(cfg)
    patched = copy.deepcopy(plain)
    batches = _batches(args.steps, args.batch_size, args.seq_len, args.seed)
    example = {"input_ids": batches[0]}
    report = ffops.memory.patch(patched, args.activations, example_inputs=example)
    print(f"Llama-style decoder from config ({sum(p.numel() for p in plain.parameters()) / 1e6:.2f} M parameters)")
    print(report, flush=True)

    def step_loss(model, ids):
        return model(input_ids=ids, labels=ids).loss

    saved = {
        name: ffops.memory.saved_bytes(step_loss, model, batches[0])
        for name, model in (("plain", plain), ("patched", patched))
    }
    print(
        f"saved for backward per step ({args.batch_size} x {args.seq_len} tokens): "
        f"plain {saved['plain'] / 2**20:.2f} MiB, patched {saved['patched'] / 2**20:.2f} MiB "
        f"({100 * (1 - saved['patched'] / saved['plain']):.0f}% less)"
    )
    losses = {"plain": [], "patched": []}
    optims = {name: torch.optim.AdamW(m.parameters(), lr=2e-3) for name, m in (("plain", plain), ("patched", patched))}
    start = time.perf_counter()
    print(
        f"training both on the same {args.steps} batches of a synthetic language (loss at start ~ ln {VOCAB} = 5.55):"
    )
    for i, ids in enumerate(batches, 1):
        for name, model in (("plain", plain), ("patched", patched)):
            loss = step_loss(model, ids)
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            optims[name].step()
            losses[name].append(loss.item())
        if i % 5 == 0 or i in (1, args.steps):
            print(
                f"  step {i:3d}: loss plain {losses['plain'][-1]:.4f}  patched {losses['patched'][-1]:.4f}", flush=True
            )
    out = Path(args.out or f"runs/memory-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text(str(report) + "\n")
    payload = {"args": vars(args), "saved_bytes_per_step": saved, "losses": losses}
    (out / "losses.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"done in {time.perf_counter() - start:.0f} s; wrote {out}/report.txt, losses.json")
    return 0
