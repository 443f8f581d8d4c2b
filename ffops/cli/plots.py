"""The PNG of an FF training run: error curves, and positive / negative goodness histograms per layer."""


def plot_ff_history(history: list, path, title: str = "") -> None:
    """Left: train / test error per epoch (goodness and head predictions); right: the last epoch's
    goodness histograms of positive and negative data, one panel per layer. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib (or pip install ffops[plot])") from exc
    hist = history[-1]["goodness"] if history else []
    ncols = 1 + max(len(hist), 1)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6), squeeze=False)
    ax = axes[0][0]
    steps = list(range(1, len(history) + 1))
    for key, style in (("train_error_goodness", "C0--"), ("test_error_goodness", "C0-"),
                       ("train_error_head", "C1--"), ("test_error_head", "C1-")):
        points = [(s, 100 * r[key]) for s, r in zip(steps, history) if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_error_", " ").replace("_", " "))
    ax.set_xlabel("epoch" + (" (all phases)" if any(r.get("phase") is not None for r in history) else ""))
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
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
