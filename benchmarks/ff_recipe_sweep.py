"""Short runs of Forward-Forward recipes on a deep net, to choose the recipe of a long run.

Run from the repository root::

    python -m benchmarks.ff_recipe_sweep                          # every recipe below, 4 x 1000, 2 epochs
    python -m benchmarks.ff_recipe_sweep --recipes all-symba-a8,collaborative --width 2000 --epochs 1

Each recipe trains ``784 - width x depth`` (default 4 x 1000) from the same initial weights
(seed 0) on MNIST's 50k training split with Adam, batch 100, the linear cooldown over the given
epochs, and is scored on the 10k validation split (never on the test set): error by goodness over
all layers, without the first layer, and by the softmax head. Per epoch it prints the mean loss per layer and the mean
positive / negative goodness per layer (a layer near zero for both is silent). One line per recipe
goes to ``benchmarks/results/ff_recipe_sweep_<width>x<depth>_<epochs>ep_cpu.jsonl`` (appended).
A 2-epoch run is a proxy: it ranks recipes by how fast the upper layers learn, not by where a
60-epoch run ends.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks import harness

# name -> (FFNet keyword arguments, FFTrainer keyword arguments), spelled out in full so that a
# recipe does not change with the library's defaults; hard negatives unless noted
SOFTPLUS, SYMBA = {"loss": "softplus"}, {"loss": "symba", "alpha": 4.0}
# input dropout off unless a recipe names it (its default changed to 0.1 after these recipes were run)
COLLAB = {"mode": "collaborative", "collab_layers": "others", "input_dropout": 0.0}
ALL = {"mode": "all", "input_dropout": 0.0}
RECIPES = {
    "collaborative": (SOFTPLUS, COLLAB),
    "collaborative-peer": ({**SOFTPLUS, "peer_weight": 0.03}, COLLAB),
    "collaborative-past": (SOFTPLUS, {**COLLAB, "collab_layers": "past"}),
    "collaborative-w0.5": (SOFTPLUS, {**COLLAB, "collab_weight": 0.5}),
    "collaborative-w0.25": (SOFTPLUS, {**COLLAB, "collab_weight": 0.25}),
    "collaborative-symba": (SYMBA, COLLAB),
    "all": (SOFTPLUS, ALL),
    "all-peer": ({**SOFTPLUS, "peer_weight": 0.03}, ALL),
    "all-random": (SOFTPLUS, {**ALL, "negatives": "random"}),
    "all-symba": (SYMBA, ALL),
    "all-symba-a2": ({**SYMBA, "alpha": 2.0}, ALL),
    "all-symba-a8": ({**SYMBA, "alpha": 8.0}, ALL),
    "all-symba-a8-head": ({**SYMBA, "alpha": 8.0}, {**ALL, "negatives": "head"}),
    "all-symba-a8-drop10": ({**SYMBA, "alpha": 8.0}, {**ALL, "input_dropout": 0.1}),
    "all-symba-a8-head-drop10": ({**SYMBA, "alpha": 8.0}, {**ALL, "negatives": "head", "input_dropout": 0.1}),
    "all-symba-lr1e-3": (SYMBA, {**ALL, "lr": 1e-3}),
    "all-symba-random": (SYMBA, {**ALL, "negatives": "random"}),
}


def run_recipe(name: str, width: int, depth: int, epochs: int, train, valid) -> dict:
    from ffops import ff

    net_kw, trainer_kw = RECIPES[name]
    torch.manual_seed(0)
    model = ff.FFNet([784] + [width] * depth, num_classes=10, **net_kw)
    trainer = ff.FFTrainer(model, eval_train_samples=5000, **trainer_kw)
    t0 = time.perf_counter()
    history = trainer.fit(train.images, train.labels, epochs=epochs, batch_size=100)
    for r in history:
        print(
            f"{name} epoch {r['epoch']} loss {[round(v, 3) for v in r['loss']]} goodness pos/neg "
            f"{[(round(g['pos_mean'], 2), round(g['neg_mean'], 2)) for g in r['goodness']]}",
            flush=True,
        )
    result = {
        "recipe": name,
        "width": width,
        "depth": depth,
        "epochs": epochs,
        "net": net_kw,
        "trainer": trainer_kw,
    }
    for skip in (False, True):
        trainer.config["skip_first"] = skip
        errors = trainer.evaluate(valid.images, valid.labels)
        result[f"valid_error_goodness{'_skip_first' if skip else ''}"] = 100 * errors["error_goodness"]
        result["valid_error_head"] = 100 * errors["error_head"]
    result["wall_s"] = time.perf_counter() - t0
    result["final_goodness_pos_neg"] = [(g["pos_mean"], g["neg_mean"]) for g in history[-1]["goodness"]]
    print(
        f"{name}: valid error goodness {result['valid_error_goodness']:.2f} %, without layer 1 "
        f"{result['valid_error_goodness_skip_first']:.2f} %, head {result['valid_error_head']:.2f} % "
        f"({result['wall_s']:.0f} s)",
        flush=True,
    )
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names from RECIPES")
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"error: unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    from ffops import data

    torch.set_num_threads(args.threads)
    meta = harness.metadata(torch.device("cpu"))
    print(f"ff_recipe_sweep: {harness.machine_line(meta)}, torch {meta['torch']}, ffops {meta['ffops']}", flush=True)
    train = data.load_dataset("mnist", split="train")
    valid = data.load_dataset("mnist", split="valid")
    out = Path(__file__).parent / "results" / f"ff_recipe_sweep_{args.width}x{args.depth}_{args.epochs}ep_cpu.jsonl"
    for name in names:
        result = {**run_recipe(name, args.width, args.depth, args.epochs, train, valid), "metadata": meta}
        with out.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
