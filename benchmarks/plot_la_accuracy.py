"""Dice per held-out case of two methods (by default supervised-only against DTC), from
benchmarks/results/la_accuracy_<protocol>.json or the result files given with --results.

    python benchmarks/plot_la_accuracy.py --protocol lite     # writes docs/figures/la_accuracy_lite.png
    python benchmarks/plot_la_accuracy.py --protocol lite --x supervised+intensity+spatial+low-contrast \
        --y dtc+intensity+spatial+low-contrast --name default-recipe   # ..._lite_default-recipe.png
    python benchmarks/plot_la_accuracy.py --protocol full --x dtc --y dtc+intensity+spatial+low-contrast \
        --name recipes   # two DTC recipes against each other
    python benchmarks/plot_la_accuracy.py --results benchmarks/results/la_accuracy_lite_ce.json \
        benchmarks/results/la_accuracy_lite_poly.json --x dtc+intensity+spatial+low-contrast \
        --y dtc+intensity+spatial+low-contrast+poly --post fast_tta8 --name poly-tta8"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
MARKERS = "os^vDPX*h8pd<>H"  # one per seed (colours repeat after ten; the markers tell them apart)


def axis_label(method: str) -> str:
    data = "16 labeled" if method.startswith("supervised") else "16 labeled + 48 unlabeled"
    return f"{method} Dice % ({data})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="lite")
    p.add_argument("--post", choices=["without_lcc", "with_lcc", "fast_tta8"], default="without_lcc",
                   help="which scoring: without or with largest-component post-processing, or fast --tta 8")
    p.add_argument("--results", type=Path, nargs="+", help="la_accuracy result files (default: the protocol's)")
    p.add_argument("--x", default="supervised", help="la_accuracy method on the x axis")
    p.add_argument("--y", default="dtc", help="la_accuracy method on the y axis")
    p.add_argument("--name", help="figure name suffix (la_accuracy_<protocol>_<name>.png)")
    args = p.parse_args()
    files = args.results or [HERE / "results" / f"la_accuracy_{args.protocol}.json"]
    runs = [r for f in files for r in json.loads(f.read_text())["runs"] if r["status"] == "finished"]
    seeds = sorted({r["seed"] for r in runs if r["method"] == args.y} &
                   {r["seed"] for r in runs if r["method"] == args.x})
    if len(seeds) > len(MARKERS):
        raise SystemExit(f"{len(seeds)} seeds: at most {len(MARKERS)} fit one figure")
    fig, ax = plt.subplots(figsize=(7, 7))
    for seed, marker in zip(seeds, MARKERS):
        dice = {r["method"]: r[args.post]["per_case_dice"] for r in runs if r["seed"] == seed}
        cases = sorted(dice[args.y])
        x = [100 * dice[args.x][c] for c in cases]
        y = [100 * dice[args.y][c] for c in cases]
        mean_gain = sum(b - a for a, b in zip(x, y)) / len(cases)
        ax.scatter(x, y, marker=marker, label=f"seed {seed}: y - x = {mean_gain:+.2f} Dice points")
    low = min(min(c.get_offsets()[:, 0].min(), c.get_offsets()[:, 1].min()) for c in ax.collections) - 2
    ax.plot([low, 100], [low, 100], color="grey", lw=1, ls="--", label="equal")
    ax.set(xlim=(low, 100), ylim=(low, 100), xlabel=axis_label(args.x), ylabel=axis_label(args.y),
           title=f"LA, {args.protocol} protocol: Dice per held-out case ({len(cases)} cases; {args.post})")
    ax.legend(loc="best")  # the emptiest corner: where the points lie depends on the methods
    ax.grid(alpha=0.3)
    suffix = f"_{args.name}" if args.name else ""
    out = HERE.parent / "docs" / "figures" / f"la_accuracy_{args.protocol}{suffix}.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
