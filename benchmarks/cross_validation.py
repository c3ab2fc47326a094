"""Cross-validation of LA methods over the 80 cases of train.list, so that no single case or split decides
a comparison: 5 folds, each holding out 16 cases, paired per case between methods, over several seeds.

    python benchmarks/cross_validation.py --protocol lite          # 2-core CPU: the default recipe's DTC and
                                                                    # supervised-only, seeds 1337 and 2024
    python benchmarks/cross_validation.py --protocol full --device cuda       # the paper's setting, one GPU
    python benchmarks/cross_validation.py --protocol lite --jobs 2 --workers 0  # two runs at once, 1 thread each
    python benchmarks/cross_validation.py --protocol lite --dry-run          # the commands it would run now
    python benchmarks/cross_validation.py --protocol lite --methods dtc supervised   # the paper's recipe

Fold rule (fixed, train.list order): the 80 cases form 5 blocks of 16 consecutive cases; fold f holds out
block f, labels block f+1 (mod 5) and uses the other three blocks unlabeled (48 cases). Every case is held out
exactly once and labeled exactly once, and fold 4 is the development split of benchmarks/splits. Each fold
trains from a layout folder of its own (<out>/folds/fold<f>: a train.list in the order labeled, unlabeled,
held out, beside a link to the data's cases folder), so la_accuracy.py's `dtc train` command and method flags
(`--labeled 16 --holdout 16`, `--unlabeled 48` or 0) train exactly this split.

Methods, protocols and scorings are la_accuracy.py's (and its method names); the order of work is seed, then
fold, then method, so that paired results arrive early. `--jobs N` trains N runs at once, each on 1/N of the
CPU cores (OMP_NUM_THREADS): on a 2-core CPU the lite protocol's small networks use two single-threaded runs
better than one run on two threads (docs/benchmarks.md, "Cross-validation"). It goes on where it stopped: a run recorded as finished
in the results file is kept (a lent GPU machine starts bare: carry the results file), a run folder that holds
a model is not trained again, a checkpoint without a model resumes, finished evaluations are reused
(la_runs.py). Writes
benchmarks/results/cross_validation_<protocol>.json atomically after every run (each run: fold, method, seed,
commands, training time, per-case metrics of each scoring, hardware, commit; a failed run is recorded as
failed), then reports (cross_validation_report.py): per method the mean and spread over folds and seeds,
paired differences per case with a Wilcoxon signed-rank test over cases and the folds won, markdown rows for
docs/benchmarks.md, and a per-case figure in docs/figures."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import la_accuracy  # noqa: E402  (the methods and protocols)
from cross_validation_report import DEFAULT_COMPARISON, default_figure, report  # noqa: E402
from la_runs import SCORINGS, hardware, planned_commands, scoring_flags, train_and_score  # noqa: E402

from dtc_training import la  # noqa: E402
from dtc_training.errors import InputError  # noqa: E402
from dtc_training.files import atomic_json_save, atomic_write  # noqa: E402

FOLDS = 5
DEFAULT_METHODS = list(DEFAULT_COMPARISON)  # the default recipe, supervised-only and DTC
DEFAULT_SCORINGS = ["without_lcc", "fast_tta8"]  # post-processing is not the question here


def fold_split(case_ids: list[str], fold: int, folds: int = FOLDS) -> dict[str, list[str]]:
    """{"labeled", "unlabeled", "held_out"} of one fold, by the rule in the module's docstring."""
    if len(case_ids) % folds:
        raise ValueError(f"{len(case_ids)} cases do not form {folds} equal blocks")
    size = len(case_ids) // folds
    block = lambda b: case_ids[(b % folds) * size:(b % folds + 1) * size]  # noqa: E731
    return {"labeled": block(fold + 1), "unlabeled": [c for k in range(2, folds) for c in block(fold + k)],
            "held_out": block(fold)}


def fold_root(out: Path, fold: int) -> Path:
    return out / "folds" / f"fold{fold}"


def prepare_fold(la_root: Path, out: Path, fold: int, split: dict[str, list[str]]) -> Path:
    """The fold's layout folder: train.list (labeled, unlabeled, held out), held_out.list, and a link to
    the cases (re-pointed when the data moved, as on a lent machine)."""
    root = fold_root(out, fold)
    root.mkdir(parents=True, exist_ok=True)
    for name, cases in (("train.list", split["labeled"] + split["unlabeled"] + split["held_out"]),
                        ("held_out.list", split["held_out"])):
        atomic_write(root / name, lambda f, cases=cases: f.write("\n".join(cases) + "\n"), mode="w")
    link, cases_dir = root / la.CASES_FOLDER, (la.layout_root(la_root) / la.CASES_FOLDER).resolve()
    if link.is_symlink() and Path(os.readlink(link)) != cases_dir:
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(cases_dir, target_is_directory=True)
    return root


def run_dir(out: Path, protocol: str, fold: int, method: str, seed: int) -> Path:
    return out / f"{protocol}-fold{fold}-{method}-seed{seed}"


def commands(args, fold: int, method: str, seed: int) -> tuple[Path, list[str], list[str], dict[str, list[str]]]:
    """(run folder, `dtc train` command, `dtc evaluate` options naming the cases and device, scorings)."""
    folder = run_dir(args.out, args.protocol, fold, method, seed)
    train = la_accuracy.train_command(args.protocol, method, seed, fold_root(args.out, fold), folder, args.device,
                                      args.workers)
    evaluate = ["--la-root", str(args.la_root), "--cases", str(fold_root(args.out, fold) / "held_out.list"),
                "--device", args.device]
    flags = scoring_flags(args.protocol, args.device)
    return folder, train, evaluate, {key: flags[key] for key in args.scorings}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=sorted(la_accuracy.PROTOCOLS), default="lite")
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 2024])
    p.add_argument("--methods", nargs="+", choices=sorted(la_accuracy.METHODS), default=DEFAULT_METHODS,
                   help="la_accuracy.py methods; the first two are compared (second minus first)")
    p.add_argument("--folds", type=int, nargs="+", choices=range(FOLDS), default=list(range(FOLDS)),
                   help="run only these folds (the report covers every fold in the results file)")
    p.add_argument("--scorings", nargs="+", choices=SCORINGS, default=DEFAULT_SCORINGS,
                   help="dtc evaluate scorings (la_accuracy.py's); the first is the report's main one")
    p.add_argument("--la-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "LA")
    p.add_argument("--out", type=Path, default=HERE.parent / "runs" / "cross_validation")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers of each training (-1: dtc's default)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each on cores / jobs threads")
    p.add_argument("--results", type=Path,
                   help="results JSON (default: benchmarks/results/cross_validation_<protocol>.json)")
    p.add_argument("--figure", type=Path,
                   help="per-case figure (default: docs/figures/cross_validation_<protocol>.png for the default pair, "
                   "cross_validation_<protocol>_<second>_vs_<first>.png for another)")
    p.add_argument("--dry-run", action="store_true", help="print the commands it would run now, run nothing")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    args.out = args.out.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        case_ids = la.read_case_list(args.la_root)
        if len(case_ids) != FOLDS * 16:  # the methods' flags: 16 labeled, 48 unlabeled, 16 held out
            raise InputError(f"{la.layout_root(args.la_root) / 'train.list'}: {len(case_ids)} cases; the folds "
                             f"need {FOLDS * 16}")
    except InputError as e:
        print(f"cross_validation: error: {e}", file=sys.stderr)
        return 2
    splits = {fold: fold_split(case_ids, fold) for fold in range(FOLDS)}
    results_file = args.results or HERE / "results" / f"cross_validation_{args.protocol}.json"
    figure = args.figure or default_figure(args.protocol, args.methods[:2])
    # earlier runs stay; a rerun of the same fold, method and seed replaces its record
    runs = json.loads(results_file.read_text())["runs"] if results_file.exists() else []
    # A run recorded as finished with every scoring asked for is kept as it is, without its folder: a lent
    # machine starts bare, and its runs' models are too large to bring back, but the results file is not.
    recorded = {(r["fold"], r["method"], r["seed"]) for r in runs
                if r["status"] == "finished" and all(key in r for key in args.scorings)}
    work = [(seed, fold, method) for seed in args.seeds for fold in args.folds for method in args.methods
            if (fold, method, seed) not in recorded]
    if args.dry_run:
        print(f"# {len(recorded)} runs recorded as finished in {results_file}")
        for seed, fold, method in work:
            folder, train, evaluate, scorings = commands(args, fold, method, seed)
            planned = planned_commands(folder, train, evaluate, scorings)
            print(f"# fold {fold}, {method}, seed {seed}: " + ("nothing to run" if not planned else ""))
            for command in planned:
                print(shlex.join(command))
        return 0
    machine, commit, env = hardware(args.device), la_accuracy.git_commit(), None
    if args.jobs > 1:  # the children's threads: torch reads OMP_NUM_THREADS when it starts
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        machine += f", {args.jobs} runs at once on {threads} thread(s) each"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    for fold in args.folds:
        prepare_fold(args.la_root, args.out, fold, splits[fold])

    def run(seed: int, fold: int, method: str) -> dict:
        folder, train, evaluate, scorings = commands(args, fold, method, seed)
        print(f"fold {fold}, {method}, seed {seed} ...", flush=True)
        return {"protocol": args.protocol, "fold": fold, "method": method, "seed": seed,
                **train_and_score(folder, train, evaluate, scorings, env),
                "hardware": machine, "commit": commit, "date": time.strftime("%Y-%m-%d")}

    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on the `dtc` children
        for future in as_completed([pool.submit(run, *w) for w in work]):
            done = future.result()
            key = (done["fold"], done["method"], done["seed"])
            runs = [r for r in runs if (r["fold"], r["method"], r["seed"]) != key] + [done]
            atomic_json_save({"host": platform.node(), "protocol": args.protocol,
                              "fold_rule": "train.list order, blocks of 16: fold f holds out block f, labels "
                                           "block f+1 (mod 5), the other three blocks unlabeled",
                              "folds": {str(f): s for f, s in splits.items()}, "runs": runs}, results_file)
            trained = "trained by an earlier run" if done.get("trained_by_an_earlier_run") else "trained now"
            print(f"fold {key[0]}, {key[1]}, seed {key[2]}: {done['status']} ({trained}, training "
                  f"{done.get('train_seconds')} s)", flush=True)
    print(report(runs, args.methods[:2], args.scorings, figure, args.protocol))
    return 0


if __name__ == "__main__":
    sys.exit(main())
