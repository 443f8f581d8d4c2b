"""The PNGs of FF training runs: error curves, and positive / negative goodness histograms per layer
(MLP runs); error curves per predictor and block (conv runs)."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib (or pip install ffops[plot])") from exc
    return plt


def plot_conv_history(history: list, path, title: str = "") -> None:
    """Left: validation (dashed) and test (solid) error per epoch of the conv net's predictors;
    right: validation (else test) error of each block's goodness alone and the blocks' mean losses.
    Needs matplotlib."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [r["epoch"] for r in history]
    ax = axes[0]
    for color, method in zip(("C0", "C1", "C2"), ("goodness", "last", "head")):
        for split, style in (("valid", "--"), ("test", "-")):
            points = [(e, 100 * r[split][method]) for e, r in zip(epochs, history) if method in r.get(split, {})]
            if points:
                ax.plot(*zip(*points), color + style, marker="o", markersize=3, label=f"{split} {method}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "error")
    ax = axes[1]
    # per-block errors on the validation split; on the test set for a run without one (--valid 0)
    split = "valid" if history and "valid" in history[-1] else "test"
    blocks = sorted(k for k in history[-1].get(split, {}) if k.startswith("block_")) if history else []
    for i, key in enumerate(blocks):
        ax.plot(epochs, [100 * r[split][key] for r in history], f"C{i}-", marker="o", markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{'validation' if split == 'valid' else 'test'} error of the block alone (%)")
    ax.grid(True, alpha=0.3)
    if blocks:
        ax.legend(fontsize=8)
    twin = ax.twinx()
    for i in range(len(history[0]["loss"]) if history else 0):
        twin.plot(epochs, [r["loss"][i] for r in history], f"C{i}:", linewidth=1)
    twin.set_ylabel("mean loss (dotted)")
    ax.set_title("blocks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ff_history(history: list, path, title: str = "") -> None:
    """Left: train / test error per epoch (goodness and head predictions); right: the last epoch's
    goodness histograms of positive and negative data, one panel per layer. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib (or pip install ffops[plot])") from exc
    hist = history[-1]["goodness"] if history else []
    ncols = 1 + max(len(hist), 1)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6), squeeze=False)
    ax = axes[0][0]
    steps = list(range(1, len(history) + 1))
    values = []
    for key, style in (
        ("train_error_goodness", "C0--"),
        ("test_error_goodness", "C0-"),
        ("train_error_head", "C1--"),
        ("test_error_head", "C1-"),
    ):
        points = [(s, 100 * r[key]) for s, r in zip(steps, history) if r.get(key) is not None]
        if points:
            # markers: a run of one epoch (or one evaluation) is a single point per curve
            ax.plot(*zip(*points), style, marker="o", markersize=3, label=key.replace("_error_", " ").replace("_", " "))
            values.extend(v for _, v in points)
    ax.set_xlabel("epoch" + (" (all phases)" if any(r.get("phase") is not None for r in history) else ""))
    ax.set_ylabel("error (%)")
    if values and min(values) > 0 and max(values) / min(values) > 10:  # log only where it spreads the curves
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if len(steps) <= 12:  # every epoch a tick; one epoch is one point in the middle
        ax.set_xticks(steps)
        ax.set_xlim(0.5, len(steps) + 0.5)
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "error")
    for i, layer in enumerate(hist):
        ax = axes[0][i + 1]
        edges = layer["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        width = edges[1] - edges[0]
        ax.bar(centers, layer["pos"], width=width, alpha=0.6, color="C2", label="positive")
        ax.bar(centers, layer["neg"], width=width, alpha=0.6, color="C3", label="negative")
        ax.set_title(f"layer {layer['layer'] + 1} goodness (last epoch)")
        ax.set_xlabel("goodness")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sparse_results(results: list, path, title: str = "") -> None:
    """The PNG of a train-sparse run, one x position per model (dense, then by sparsity). Left: test
    accuracy after sparse fine-tuning (and right after pruning) vs sparsity. Right: median time of
    a training step (and of a forward pass) vs sparsity, bars annotated with the speedup over
    dense. ``results`` are the rows of ``log.json``'s ``results`` (``sparsity``,
    ``test_accuracy``, optional ``pruned_accuracy``, ``step_ms``, ``forward_ms``, ``speedup``,
    ``forward_speedup``). Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib (or pip install ffops[plot])") from exc
    longer = [r for r in results if r.get("model") == "dense-longer"]  # drawn as a line, not a point
    rows = sorted((r for r in results if r.get("model") != "dense-longer"), key=lambda r: r["sparsity"])
    xs = list(range(len(rows)))
    labels = ["dense" if r["sparsity"] == 0 else f"{100 * r['sparsity']:g} %" for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    acc = [100 * r["test_accuracy"] for r in rows]
    ax.plot(xs, acc, "C0o-", label="sparse fine-tuned")
    pruned = [(x, 100 * r["pruned_accuracy"]) for x, r in zip(xs, rows) if r.get("pruned_accuracy") is not None]
    if pruned:
        ax.plot(*zip(*pruned), "C1s", label="after pruning, before fine-tuning")
    if rows and rows[0]["sparsity"] == 0:
        ax.axhline(acc[0], color="gray", lw=0.8, ls=":", label="dense")
    if longer:
        ax.axhline(
            100 * longer[0]["test_accuracy"],
            color="C3",
            lw=0.8,
            ls="--",
            label="dense, trained as many epochs",
        )
    for x, a in zip(xs, acc):
        ax.annotate(f"{a:.2f}", (x, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    lo = min([a for a in acc] + [p for _, p in pruned])
    ax.set_ylim(bottom=lo - 0.15 * (max(acc) - lo + 0.2), top=max(acc) + 0.2 * (max(acc) - lo + 0.2))
    ax.set_xticks(xs, labels)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel("sparsity of the pruned layers")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "accuracy vs sparsity", fontsize=9)
    timed = [(x, r) for x, r in zip(xs, rows) if r.get("step_ms") is not None]
    if timed:
        has_fwd = all(r.get("forward_ms") is not None for _, r in timed)
        w = 0.38 if has_fwd else 0.6
        off = w / 2 if has_fwd else 0.0
        step = bx.bar(
            [x - off for x, _ in timed],
            [r["step_ms"] for _, r in timed],
            w,
            color="C0",
            label="training step (fwd + bwd + Adam)",
        )
        bx.bar_label(
            step,
            [f"{r['speedup']:.2f}x" if r.get("speedup") else "" for _, r in timed],
            fontsize=8,
            color="C0",
        )
        if has_fwd:
            fwd = bx.bar(
                [x + off for x, _ in timed],
                [r["forward_ms"] for _, r in timed],
                w,
                color="C2",
                label="forward (inference)",
            )
            bx.bar_label(
                fwd,
                [f"{r['forward_speedup']:.2f}x" if r.get("forward_speedup") else "" for _, r in timed],
                fontsize=8,
                color="C2",
            )
        bx.set_ylim(top=1.15 * max(max(r["step_ms"], r.get("forward_ms") or 0) for _, r in timed))
        bx.legend(fontsize=8)
    else:
        bx.text(0.5, 0.5, "not timed", ha="center", va="center", transform=bx.transAxes)
    bx.set_xticks(xs, labels)
    bx.set_xlim(-0.5, len(xs) - 0.5)
    bx.set_xlabel("sparsity of the pruned layers")
    bx.set_ylabel("median time (ms)")
    bx.grid(True, axis="y", alpha=0.3)
    bx.set_title("time per batch (speedup over dense)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
