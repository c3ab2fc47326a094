"""The report of a cross-validation results file (cross_validation.py writes the file and calls `report` at its
end; run this alone to report again without running anything):

    python benchmarks/cross_validation_report.py --protocol lite
    python benchmarks/cross_validation_report.py --protocol lite --compare dtc dtc+intensity+spatial+low-contrast+poly

Per method: Dice, Jaccard, 95HD and ASD (`dtc evaluate`, voxels) averaged over the runs (folds x seeds), the
SD of the run means, the SD between seeds on the same fold (averaged over folds: the noise floor of a
difference between methods) and each fold's mean over seeds. Per comparison (the second method minus the first, same
fold and seed): the mean paired difference and its SD over runs, each fold's mean difference and the folds
it is better on, the cases it is better on, and a Wilcoxon signed-rank test over cases (each case's difference
averaged over the seeds first: a case is held out in one fold only, so the cases are the independent units).
Prints markdown rows for docs/benchmarks.md and draws the per-case figure."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
METRICS = ("dice", "jaccard", "hd95_voxels", "asd_voxels")
DEFAULT_COMPARISON = ("supervised+intensity+spatial+low-contrast+poly", "dtc+intensity+spatial+low-contrast+poly")
TARGET_POINTS, TARGET_FOLDS = 2.0, 4  # issue 35: at least +2 Dice points, better on at least 4 of 5 folds


def _number(value) -> float:
    return math.nan if value is None else float(value)  # undefined distances are null in the JSON


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def finished(runs: list[dict], method: str, scoring: str) -> list[dict]:
    return [r for r in runs if r["method"] == method and r["status"] == "finished" and scoring in r]


def method_summary(runs: list[dict], method: str, scoring: str) -> dict | None:
    done = finished(runs, method, scoring)
    if not done:
        return None
    dice = [r[scoring]["mean"]["dice"] for r in done]
    folds = sorted({r["fold"] for r in done})
    times = [r["train_seconds"] for r in done if r.get("train_seconds") is not None]
    # the noise floor a difference between methods is read against: how far the same method's seeds lie
    # apart on the same fold (the SD between seeds, averaged over the folds with more than one)
    by_fold = [[r[scoring]["mean"]["dice"] for r in done if r["fold"] == f] for f in folds]
    seed_sds = [_sd(d) for d in by_fold if len(d) > 1]
    return {"method": method, "runs": len(done), "seeds": sorted({r["seed"] for r in done}), "dice_sd": _sd(dice),
            "seed_sd": float(np.mean(seed_sds)) if seed_sds else math.nan,
            **{m: float(np.nanmean([_number(r[scoring]["mean"][m]) for r in done])) for m in METRICS},
            "per_fold": {f: float(np.mean([r[scoring]["mean"]["dice"] for r in done if r["fold"] == f]))
                         for f in folds},
            "train_minutes": float(np.mean(times)) / 60 if times else math.nan,
            "hardware": sorted({r["hardware"] for r in done}), "commit": sorted({r["commit"] for r in done})}


def paired(runs: list[dict], x: str, y: str, scoring: str) -> dict | None:
    """`y` minus `x` over the (fold, seed) pairs both finished, per case and metric."""
    xs = {(r["fold"], r["seed"]): r for r in finished(runs, x, scoring)}
    ys = {(r["fold"], r["seed"]): r for r in finished(runs, y, scoring)}
    keys = sorted(xs.keys() & ys.keys())
    if not keys:
        return None
    pairs = []  # one per case and seed
    for fold, seed in keys:
        cx, cy = xs[fold, seed][scoring]["per_case"], ys[fold, seed][scoring]["per_case"]
        for case in sorted(cx.keys() & cy.keys()):
            pairs.append({"fold": fold, "seed": seed, "case": case,
                          **{f"{m}_x": _number(cx[case][m]) for m in METRICS},
                          **{f"{m}_y": _number(cy[case][m]) for m in METRICS},
                          **{m: _number(cy[case][m]) - _number(cx[case][m]) for m in METRICS}})
    by_run = {k: [p["dice"] for p in pairs if (p["fold"], p["seed"]) == k] for k in keys}
    run_diff = {k: float(np.mean(v)) for k, v in by_run.items()}
    folds = sorted({f for f, _ in keys})
    per_fold = {f: float(np.mean([d for (g, _), d in run_diff.items() if g == f])) for f in folds}
    cases = sorted({p["case"] for p in pairs})
    per_case = {c: float(np.mean([p["dice"] for p in pairs if p["case"] == c])) for c in cases}
    differences = np.array(list(per_case.values()))
    if np.any(differences != 0):
        from scipy.stats import wilcoxon

        test = wilcoxon(differences)  # ties (zero differences) dropped, as Wilcoxon's original test does
        statistic, p_value = float(test.statistic), float(test.pvalue)
    else:
        statistic, p_value = math.nan, math.nan
    mean = float(np.mean(list(run_diff.values())))
    folds_better = sum(d > 0 for d in per_fold.values())
    return {"x": x, "y": y, "scoring": scoring, "pairs": pairs, "runs": len(keys),
            "unpaired": sorted((set(xs) ^ set(ys))), "dice": mean, "dice_sd": _sd(list(run_diff.values())),
            **{m: float(np.nanmean([p[m] for p in pairs])) for m in METRICS[1:]},
            "per_run": run_diff, "per_fold": per_fold, "folds_better": folds_better, "folds": len(folds),
            "per_case": per_case, "cases_better": int(np.sum(differences > 0)),
            "cases_worse": int(np.sum(differences < 0)), "wilcoxon_statistic": statistic, "wilcoxon_p": p_value,
            "target_met": 100 * mean >= TARGET_POINTS and folds_better >= TARGET_FOLDS}


def method_row(s: dict, scoring: str) -> str:
    unlabeled = 0 if s["method"].startswith("supervised") else 48
    folds = " / ".join(f"{100 * d:.2f}" for d in s["per_fold"].values())
    folds_run = ", ".join(map(str, s["per_fold"]))
    return (f"| {s['method']} | 16 / {unlabeled} | {scoring} | {s['runs']} (folds {folds_run}; "
            f"seeds {', '.join(map(str, s['seeds']))}) | {100 * s['dice']:.2f} ({_f(100 * s['dice_sd'])}) | "
            f"{_f(100 * s['seed_sd'])} | {folds} | "
            f"{100 * s['jaccard']:.2f} | {s['hd95_voxels']:.2f} | {s['asd_voxels']:.2f} | "
            f"{_f(s['train_minutes'], '.1f')} min | {', '.join(s['hardware'])} | {', '.join(s['commit'])} |")


def comparison_row(c: dict) -> str:
    folds = " / ".join(f"{100 * d:+.2f}" for d in c["per_fold"].values())
    return (f"| {c['y']} minus {c['x']} | {c['scoring']} | {c['runs']} | {100 * c['dice']:+.2f} "
            f"({_f(100 * c['dice_sd'])}) | {folds} | {c['folds_better']} of {c['folds']} | "
            f"{c['cases_better']} better, {c['cases_worse']} worse of {len(c['per_case'])} | "
            f"{_f(c['wilcoxon_p'], '.3g')} | {100 * c['jaccard']:+.2f} | {c['hd95_voxels']:+.2f} | "
            f"{c['asd_voxels']:+.2f} | {'yes' if c['target_met'] else 'no'} |")


def _f(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


METHOD_HEADER = ("| Method | labeled / unlabeled | scoring | runs | Dice % (SD over runs) | seed-to-seed SD in a "
                 "fold | Dice % per fold | Jaccard % | 95HD vox | ASD vox | training time | hardware | commit |\n"
                 + "|---" * 13 + "|")
COMPARISON_HEADER = ("| Paired, per case | scoring | runs | Dice points (SD over runs) | per fold | folds better | "
                     "cases (mean over seeds) | Wilcoxon p | Jaccard points | 95HD vox | ASD vox | "
                     f"+{TARGET_POINTS:g} on {TARGET_FOLDS} folds |\n" + "|---" * 12 + "|")


def draw(c: dict, path: Path, protocol: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1, 1]})
    seeds = sorted({p["seed"] for p in c["pairs"]})
    colours = plt.get_cmap("tab10")
    for fold in sorted(c["per_fold"]):
        for seed, marker in zip(seeds, "os^vD"):
            part = [p for p in c["pairs"] if p["fold"] == fold and p["seed"] == seed]
            left.scatter([100 * p["dice_x"] for p in part], [100 * p["dice_y"] for p in part], marker=marker,
                         color=colours(fold), alpha=0.75, label=f"fold {fold}, seed {seed}")
    values = [100 * p[f"dice_{k}"] for p in c["pairs"] for k in "xy"]
    low = max(0.0, min(values) - 3)
    left.plot([low, 100], [low, 100], color="grey", lw=1, ls="--")
    left.set(xlim=(low, 100), ylim=(low, 100), xlabel=f"{c['x']}: Dice % per held-out case",
             ylabel=f"{c['y']}: Dice %", title="Each held-out case, each seed (above the line: y better)")
    left.legend(fontsize=7, ncol=2, loc="lower right")
    left.grid(alpha=0.3)
    for fold, mean in c["per_fold"].items():
        runs = [100 * d for (f, _), d in c["per_run"].items() if f == fold]
        right.bar(fold, 100 * mean, color=colours(fold), alpha=0.5)
        right.scatter([fold] * len(runs), runs, color="black", zorder=3, s=18)
    right.axhline(0, color="grey", lw=1)
    right.axhline(100 * c["dice"], color="black", ls="--", lw=1, label=f"mean {100 * c['dice']:+.2f} points")
    right.axhline(TARGET_POINTS, color="green", ls=":", lw=1, label=f"target +{TARGET_POINTS:g}")
    right.set(xticks=sorted(c["per_fold"]), xlabel="fold (bars: mean over seeds; dots: each seed)",
              ylabel="Dice points, y minus x (mean over the fold's 16 held-out cases)",
              title=f"Per fold: better on {c['folds_better']} of {c['folds']}; Wilcoxon over "
                    f"{len(c['per_case'])} cases p = {_f(c['wilcoxon_p'], '.3g')}")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(f"LA cross-validation, {protocol} protocol, {c['scoring']}: {c['y']} (y) against {c['x']} (x)",
                 fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def default_figure(protocol: str, compare: list[str]) -> Path:
    """docs/figures/cross_validation_<protocol>.png for the default pair; any other pair gets a file of its own,
    named after both methods, so that reporting it leaves the default pair's figure as it is."""
    name = f"cross_validation_{protocol}"
    if len(compare) == 2 and tuple(compare) != DEFAULT_COMPARISON:
        name += f"_{compare[1]}_vs_{compare[0]}"
    return HERE.parent / "docs" / "figures" / f"{name}.png"


def report(runs: list[dict], compare: list[str], scorings: list[str], figure: Path | None, protocol: str) -> str:
    """Markdown tables of every method in `runs` and of `compare` (y minus x); the figure of the first
    scoring's comparison. Returns the text to print."""
    methods = list(dict.fromkeys([*compare, *(r["method"] for r in runs)]))
    summaries = [(s, k) for m in methods for k in scorings if (s := method_summary(runs, m, k))]
    lines = [METHOD_HEADER, *(method_row(s, k) for s, k in summaries)]
    if len(compare) == 2:
        comparisons = [c for k in scorings if (c := paired(runs, compare[0], compare[1], k))]
        if comparisons:
            lines += ["", COMPARISON_HEADER, *map(comparison_row, comparisons)]
            unpaired = comparisons[0]["unpaired"]
            if unpaired:
                lines.append(f"(fold, seed) without a partner run, left out: {unpaired}")
            if figure is not None:
                lines.append(f"figure: {draw(comparisons[0], figure, protocol)}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="lite")
    p.add_argument("--results", type=Path, help="default: benchmarks/results/cross_validation_<protocol>.json")
    p.add_argument("--compare", nargs=2, metavar=("X", "Y"),
                   default=list(DEFAULT_COMPARISON))
    p.add_argument("--scorings", nargs="+", default=["without_lcc", "fast_tta8"])
    p.add_argument("--figure", type=Path, help="default: docs/figures/cross_validation_<protocol>[_<Y>_vs_<X>].png")
    args = p.parse_args()
    results = args.results or HERE / "results" / f"cross_validation_{args.protocol}.json"
    figure = args.figure or default_figure(args.protocol, args.compare)
    if not results.is_file():
        print(f"cross_validation_report: error: {results}: no results file (run cross_validation.py)", file=sys.stderr)
        sys.exit(2)
    print(report(json.loads(results.read_text())["runs"], args.compare, args.scorings, figure, args.protocol))


if __name__ == "__main__":
    main()
