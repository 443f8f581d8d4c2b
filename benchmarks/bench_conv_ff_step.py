"""A conv FF training step (ffops.ff.FFConvNet, CwC blocks) against the same math in eager torch and
torch.compile, and the memory it saves for backward against backprop's, by depth.

Run from the repository root::

    python -m benchmarks.bench_conv_ff_step                 # the recipe's net, batch 128, fp32 and bf16
    python -m benchmarks.bench_conv_ff_step --quick         # shorter timing budget

Speed: one step = every block's forward, its local loss and backward as soon as the loss is known
(no gradient crosses blocks), the head's, and Adam over all parameters, on 28 x 28 images in
channels_last (the faster layout for every contender). Contenders share the initial weights:
* ``ffops``: ``CwCBlock.forward_goodness`` (torch's convolution, then ``ffops.cwc_block``: ReLU,
  max-pool, batch norm and the class-group goodness fused, backward in two passes);
* ``eager``: ``conv -> relu -> max_pool2d -> BatchNorm2d -> y.reshape(N, K, -1).square().mean(2)``
  and ``cross_entropy``, the same modules;
* ``compile``: each block's eager loss function under ``torch.compile`` (default mode).
float32 and bfloat16 autocast (convolutions in bf16) for all alike, on ``--device`` (cpu or cuda);
``harness.time_callables``
(warm-up, interleaved rounds, median); ratios = contender median / ffops median.

Memory: the peak of the bytes saved for backward during one step (ffops.memory.SavedTensorTracker)
for nets of 2, 4 and 8 blocks of 40 channels, FF (block-local backward) beside backprop of the same
net (no detach, the sum of the blocks' losses, one backward).

Writes ``benchmarks/results/bench_conv_ff_step_<device name>.json``.
"""

import argparse
import copy

import torch
import torch.nn.functional as F

from benchmarks import harness
from ffops.ff import FFConvNet
from ffops.memory.measure import SavedTensorTracker

RECIPE = {"channels": [20, 80, 240, 480], "groups": [1, 10, 1, 10], "pool": [False, True, False, True]}


def eager_block_loss(block, x, labels):
    """The CwC block of ``block`` (an ffops CwCBlock's modules) in plain torch: ``(y, loss)``."""
    z = torch.relu(block.conv(x))
    if block.pool:
        z = F.max_pool2d(z, 2)
    y = block.norm(z)
    g = y.float().reshape(len(y), block.num_classes, -1).square().mean(2)
    return y, F.cross_entropy(g, labels)


def ffops_block_loss(block, x, labels):
    y, g = block.forward_goodness(x)
    return y, F.cross_entropy(g, labels)


def make_step(net, block_fns, images, labels, bf16):
    device_type = images.device.type
    """One block-local training step of ``net`` with the per-block loss functions ``block_fns``."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        x = images
        for fn in block_fns:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                y, loss = fn(x, labels)
            loss.backward()
            x = y.detach()
        if net.head is not None:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net._head_logits(x), labels)
            loss.backward()
        opt.step()

    return step


def speed(args) -> list[dict]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    base = FFConvNet(1, RECIPE["channels"], groups=RECIPE["groups"], pool=RECIPE["pool"], image_size=28, head=True)
    base = base.to(device, memory_format=torch.channels_last)
    images = torch.rand(args.batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    results = []
    for bf16 in (False, True):
        names = ("ffops", "eager") if args.no_compile else ("ffops", "eager", "compile")
        nets = {name: copy.deepcopy(base) for name in names}
        torch._dynamo.reset()
        fns = {
            "ffops": [lambda x, t, b=b: ffops_block_loss(b, x, t) for b in nets["ffops"].blocks],
            "eager": [lambda x, t, b=b: eager_block_loss(b, x, t) for b in nets["eager"].blocks],
        }
        if "compile" in nets:
            fns["compile"] = [
                torch.compile(lambda x, t, b=b: eager_block_loss(b, x, t), dynamic=False)
                for b in nets["compile"].blocks
            ]
        steps = {name: make_step(nets[name], fns[name], images, labels, bf16) for name in nets}
        dtype = "bf16 autocast" if bf16 else "float32"
        result = harness.time_callables(
            f"conv FF step, batch {args.batch}, {dtype}",
            steps,
            device,
            metric="step",
            info={
                "net": RECIPE,
                "batch": args.batch,
                "dtype": dtype,
                "device": args.device,
                "threads": torch.get_num_threads(),
            },
            budget_s=args.budget,
            warmup=2,
        )
        base_ms = harness.median(result, "ffops", "step")
        print(f"\n{result['case']} ({result['rounds']} rounds, cpu/wall {result['cpu_per_wall']:.2f})")
        for c in result["contenders"]:
            med = harness.median(result, c["name"], "step")
            print(f"  {c['name']:>8}: {1e3 * med:8.1f} ms/step  {med / base_ms:5.2f}x ffops")
        results.append(result)
    return results


def memory(args) -> list[dict]:
    rows = []
    images = torch.rand(args.batch, 1, 28, 28, device=args.device)
    labels = torch.randint(0, 10, (args.batch,), device=args.device)
    print("\nsaved for backward, peak over one step (MiB)")
    for depth in (2, 4, 8):
        torch.manual_seed(0)
        net = FFConvNet(1, [40] * depth, pool=[False, True] + [False] * (depth - 2), device=args.device)
        with SavedTensorTracker() as ff:
            x = images
            for block in net.blocks:
                y, loss = ffops_block_loss(block, x, labels)
                loss.backward()
                x = y.detach()
        with SavedTensorTracker() as bp:
            x, total = images, 0
            for block in net.blocks:
                x, loss = ffops_block_loss(block, x, labels)
                total = total + loss
            total.backward()
        row = {"depth": depth, "ff_peak_bytes": ff.peak, "backprop_peak_bytes": bp.peak}
        rows.append(row)
        print(f"  {depth} blocks: FF {ff.peak / 2**20:7.1f}   backprop {bp.peak / 2**20:7.1f}")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_conv_ff_step", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--budget", type=float, default=None, help="seconds of timed rounds per dtype (default 20, quick 5)")
    p.add_argument("--quick", action="store_true", help="5 s of timed rounds per dtype")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 5.0 if args.quick else 20.0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = harness.metadata(device)
    print(f"bench_conv_ff_step: {harness.machine_line(meta)}, torch {meta['torch']}, ffops {meta['ffops']}", flush=True)
    payload = {"meta": meta, "speed": speed(args), "memory": memory(args)}
    path = harness.write_json(harness.results_path("bench_conv_ff_step", device), payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
