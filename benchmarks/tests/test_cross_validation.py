"""cross_validation.py: the fold rule, the fold folders `dtc train` reads, the statistics of its report, and
resuming (a run folder with a model is not trained again, finished evaluations are reused), on a small
LA-shaped folder of 80 cases; one real `dtc train` and `dtc evaluate` of a two-iteration protocol."""
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))
import cross_validation as cv  # noqa: E402
import la_accuracy  # noqa: E402
from cross_validation_report import default_figure, method_summary, paired  # noqa: E402
from la_runs import model_file, training_seconds  # noqa: E402

from dtc_training.data import load_la  # noqa: E402

CASES = "2018LA_Seg_Training Set"
SUPERVISED, DTC = cv.DEFAULT_METHODS


def make_la(root: Path, count: int = 80, with_cases: bool = True) -> list[str]:
    """`count` cases of 24x24x16 voxels, each a bright ball (its label) in noise."""
    names = [f"case{i:02d}" for i in range(count)]
    root.mkdir(parents=True)
    (root / "train.list").write_text("\n".join(names) + "\n")
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in (24, 24, 16)), indexing="ij"))
    rng = np.random.default_rng(0)
    for i, name in enumerate(names if with_cases else []):
        centre = np.array([12, 12, 8]) + rng.integers(-3, 4, 3)
        label = (np.sum((grid - centre[:, None, None, None]) ** 2, axis=0) < (4 + i % 3) ** 2).astype(np.uint8)
        (root / CASES / name).mkdir(parents=True)
        with h5py.File(root / CASES / name / "mri_norm2.h5", "w") as f:
            f["image"] = (2 * label + rng.normal(0, 0.5, label.shape)).astype(np.float32)
            f["label"] = label
    return names


def test_every_case_is_held_out_once_and_labeled_once_and_fold_4_is_the_development_split():
    ids = [f"c{i}" for i in range(80)]
    held_out, labeled = [], []
    for fold in range(cv.FOLDS):
        split = cv.fold_split(ids, fold)
        assert [len(split[k]) for k in ("labeled", "unlabeled", "held_out")] == [16, 48, 16]
        assert sorted(split["labeled"] + split["unlabeled"] + split["held_out"]) == sorted(ids)  # disjoint, complete
        held_out += split["held_out"]
        labeled += split["labeled"]
    assert sorted(held_out) == sorted(ids) and sorted(labeled) == sorted(ids)
    development = {k: (BENCHMARKS / "splits" / f"la_{name}.list").read_text().split()
                   for k, name in (("labeled", "labeled"), ("unlabeled", "unlabeled"), ("held_out", "validation"))}
    order = development["labeled"] + development["unlabeled"] + development["held_out"]  # train.list's order
    assert cv.fold_split(order, 4) == development
    with pytest.raises(ValueError):
        cv.fold_split(ids[:79], 0)


def test_a_fold_folder_gives_dtc_train_exactly_its_split_and_follows_moved_data(tmp_path):
    make_la(tmp_path / "LA")
    ids = (tmp_path / "LA" / "train.list").read_text().split()
    split = cv.fold_split(ids, 2)
    root = cv.prepare_fold(tmp_path / "LA", tmp_path / "out", 2, split)
    data = load_la(root, 16, 48, 16, None)  # what `dtc train --labeled 16 --unlabeled 48 --holdout 16` loads
    assert [c["name"] for c in data.labeled] == split["labeled"]
    assert [c["name"] for c in data.unlabeled] == split["unlabeled"]
    assert [c["name"] for c in data.validation] == split["held_out"]
    assert (root / "held_out.list").read_text().split() == split["held_out"]
    (tmp_path / "LA").rename(tmp_path / "moved")  # as on a lent machine with the data elsewhere
    cv.prepare_fold(tmp_path / "moved", tmp_path / "out", 2, split)
    assert [c["name"] for c in load_la(root, 16, 0, 16, None).labeled] == split["labeled"]


def evaluation(cases: list[str], dice: list[float]) -> dict:
    per_case = [{"case": c, "dice": d, "jaccard": d / (2 - d), "hd95_voxels": 10 * (1 - d), "asd_voxels": 1 - d}
                for c, d in zip(cases, dice)]
    mean = {m: float(np.mean([c[m] for c in per_case])) for m in per_case[0] if m != "case"}
    return {"settings": {"device": "cpu"}, "cases": per_case, "mean": mean}


def record(fold: int, method: str, seed: int, cases: list[str], dice: list[float]) -> dict:
    result = evaluation(cases, dice)
    return {"fold": fold, "method": method, "seed": seed, "status": "finished", "hardware": "CPU x2",
            "commit": "abc", "train_seconds": 60,
            "without_lcc": {"mean": result["mean"], "per_case": {c["case"]: c for c in result["cases"]}}}


def failed(fold: int, method: str, seed: int) -> dict:
    return {"fold": fold, "method": method, "seed": seed, "status": "training failed (exit 1)", "log": "..."}


def runs_with(gain) -> list[dict]:
    """Both methods on every fold and two seeds; `gain(fold, seed, i)`: the second's Dice minus the first's."""
    runs = []
    for fold in range(5):
        cases = [f"f{fold}c{i}" for i in range(16)]
        for seed in (1, 2):
            base = [0.7 + 0.01 * i for i in range(16)]
            runs.append(record(fold, SUPERVISED, seed, cases, base))
            runs.append(record(fold, DTC, seed, cases, [b + gain(fold, seed, i) for i, b in enumerate(base)]))
    return runs


def test_a_uniform_gain_meets_the_target_on_every_fold_and_case():
    c = paired(runs_with(lambda fold, seed, i: 0.03), SUPERVISED, DTC, "without_lcc")
    assert c["dice"] == pytest.approx(0.03) and c["dice_sd"] == pytest.approx(0, abs=1e-12)
    assert (c["folds_better"], c["folds"], c["cases_better"], c["runs"]) == (5, 5, 80, 10)
    assert c["wilcoxon_p"] < 1e-6 and c["target_met"]
    assert c["hd95_voxels"] == pytest.approx(-0.3)  # every metric paired, not Dice alone
    reverse = paired(runs_with(lambda fold, seed, i: 0.03), DTC, SUPERVISED, "without_lcc")
    assert reverse["dice"] == pytest.approx(-0.03) and reverse["wilcoxon_p"] == pytest.approx(c["wilcoxon_p"])
    assert reverse["folds_better"] == 0 and not reverse["target_met"]


def test_a_mean_gain_carried_by_three_folds_misses_the_fold_target():
    c = paired(runs_with(lambda fold, seed, i: 0.04 if fold < 3 else -0.01), SUPERVISED, DTC, "without_lcc")
    assert c["dice"] == pytest.approx(0.02)  # the +2 points are met ...
    assert c["per_fold"] == pytest.approx({0: 0.04, 1: 0.04, 2: 0.04, 3: -0.01, 4: -0.01})
    assert c["folds_better"] == 3 and not c["target_met"]  # ... but not on 4 of 5 folds


def test_cases_are_averaged_over_seeds_before_the_test():
    c = paired(runs_with(lambda fold, seed, i: 0.1 if seed == 1 else -0.1), SUPERVISED, DTC, "without_lcc")
    assert c["dice"] == pytest.approx(0) and c["dice_sd"] == pytest.approx(0.1 * np.sqrt(10 / 9))
    assert (c["cases_better"], c["cases_worse"]) == (0, 0) and np.isnan(c["wilcoxon_p"])
    assert len(c["pairs"]) == 160 and len(c["per_case"]) == 80
    runs = runs_with(lambda fold, seed, i: 0.1 if seed == 1 else -0.1)  # DTC's two seeds 0.2 apart on every fold
    assert method_summary(runs, DTC, "without_lcc")["seed_sd"] == pytest.approx(0.2 / np.sqrt(2))
    assert method_summary(runs, SUPERVISED, "without_lcc")["seed_sd"] == pytest.approx(0, abs=1e-12)


def test_a_run_without_its_partner_is_left_out_and_named():
    runs = runs_with(lambda fold, seed, i: 0.01)
    runs = [r for r in runs if (r["fold"], r["method"], r["seed"]) != (0, DTC, 2)]
    runs.append(failed(1, DTC, 2))
    c = paired(runs, SUPERVISED, DTC, "without_lcc")
    assert c["runs"] == 9 and c["unpaired"] == [(0, 2)]
    s = method_summary(runs, DTC, "without_lcc")
    assert s["runs"] == 9 and s["per_fold"][0] == pytest.approx(np.mean([0.7 + 0.01 * i for i in range(16)]) + 0.01)


def test_undefined_distances_do_not_break_the_means():
    runs = runs_with(lambda fold, seed, i: 0.0)
    runs[1]["without_lcc"]["per_case"]["f0c0"]["hd95_voxels"] = None  # an empty truth's distance
    runs[1]["without_lcc"]["mean"]["hd95_voxels"] = None
    c = paired(runs, SUPERVISED, DTC, "without_lcc")
    assert c["hd95_voxels"] == pytest.approx(0) and np.isfinite(method_summary(runs, DTC, "without_lcc")["hd95_voxels"])


def fake_run(folder: Path, model: str | None, evaluations: dict[str, dict], checkpoint: bool = False) -> None:
    folder.mkdir(parents=True)
    if model:
        (folder / model).write_bytes(b"not a model: never loaded, as the run counts as trained")
    if checkpoint:
        (folder / "checkpoint.pt").write_bytes(b"")
    for key, result in evaluations.items():
        (folder / f"evaluation-{key}.json").write_text(json.dumps(result))


def test_dry_run_lists_only_what_is_left(tmp_path, capsys):
    make_la(tmp_path / "LA", with_cases=False)
    out, results = tmp_path / "out", tmp_path / "results.json"
    args = ["--dry-run", "--la-root", str(tmp_path / "LA"), "--out", str(out), "--seeds", "7", "--folds", "0", "1",
            "--results", str(results)]
    assert cv.main(args) == 0
    fresh = capsys.readouterr().out.splitlines()
    assert sum(" dtc_training train " in line for line in fresh) == 4  # 2 folds x 2 methods
    assert sum(" dtc_training evaluate " in line for line in fresh) == 8  # and 2 scorings each
    assert not out.exists() and not results.exists()  # a dry run writes nothing

    held_out = cv.fold_split((tmp_path / "LA" / "train.list").read_text().split(), 0)["held_out"]
    done = evaluation(held_out, [0.8] * 16)
    fake_run(cv.run_dir(out, "lite", 0, SUPERVISED, 7), "model.pt", {"without_lcc": done})  # the earlier name
    fake_run(cv.run_dir(out, "lite", 0, DTC, 7), None, {}, checkpoint=True)  # stopped in training
    fake_run(cv.run_dir(out, "lite", 1, DTC, 7), "model.safetensors", {"without_lcc": done, "fast_tta8": done})
    # recorded as finished with both scorings (on a machine that kept no run folder)
    recorded = record(1, SUPERVISED, 7, held_out, [0.8] * 16)
    results.write_text(json.dumps({"runs": [{**recorded, "fast_tta8": recorded["without_lcc"]}]}))
    assert cv.main(args) == 0
    printed = capsys.readouterr().out
    assert "# 1 runs recorded as finished" in printed
    supervised0, dtc0, dtc1 = printed.split("# fold ")[1:]
    assert " train " not in supervised0 and supervised0.count(" evaluate ") == 1 and "--tta 8" in supervised0
    assert "model.pt" in supervised0
    assert "--resume" in dtc0 and dtc0.count(" evaluate ") == 2
    assert "nothing to run" in dtc1


def test_finished_run_folders_are_reported_without_training_and_earlier_records_kept(tmp_path, capsys):
    names = make_la(tmp_path / "LA", with_cases=False)
    out, results, figure = tmp_path / "out", tmp_path / "results.json", tmp_path / "figure.png"
    for fold in range(5):
        held_out = cv.fold_split(names, fold)["held_out"]
        for seed in (1, 2):
            dice = [0.70 + 0.01 * i for i in range(16)]
            fake_run(cv.run_dir(out, "lite", fold, SUPERVISED, seed), "model.safetensors",
                     {k: evaluation(held_out, dice) for k in cv.DEFAULT_SCORINGS})
            fake_run(cv.run_dir(out, "lite", fold, DTC, seed), "model.pt",
                     {k: evaluation(held_out, [d + 0.025 for d in dice]) for k in cv.DEFAULT_SCORINGS})
    earlier = [record(0, "dtc", 1, ["case00"], [0.5]), failed(3, DTC, 2)]  # another method: kept; this one: replaced
    results.write_text(json.dumps({"runs": earlier}))
    args = ["--la-root", str(tmp_path / "LA"), "--out", str(out), "--seeds", "1", "2", "--results", str(results),
            "--figure", str(figure)]
    assert cv.main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads(results.read_text())
    assert len(saved["runs"]) == 21 and saved["folds"]["4"]["labeled"] == names[:16]
    assert {r["method"] for r in saved["runs"]} == {"dtc", SUPERVISED, DTC}
    ours = [r for r in saved["runs"] if r["method"] != "dtc"]
    assert all(r["status"] == "finished" and r["trained_by_an_earlier_run"] for r in ours)
    assert not list(out.glob("*/train.log"))  # nothing was trained
    comparison = next(line for line in printed.splitlines() if line.startswith(f"| {DTC} minus"))
    assert "| +2.50 (0.00) |" in comparison and "| 5 of 5 |" in comparison and comparison.endswith("| yes |")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_real_training_is_resumed_not_repeated(tmp_path, monkeypatch, capsys):
    """Two iterations of a tiny protocol through the real `dtc train` and `dtc evaluate`, from a fold folder."""
    monkeypatch.setitem(la_accuracy.PROTOCOLS, "smoke",
                        ["--patch", "16", "16", "16", "--n-filters", "4", "--iterations", "2"])
    names = make_la(tmp_path / "LA")
    out, results = tmp_path / "out", tmp_path / "results.json"
    args = ["--protocol", "smoke", "--methods", "supervised", "--seeds", "3", "--folds", "1", "--scorings",
            "without_lcc", "--la-root", str(tmp_path / "LA"), "--out", str(out), "--results", str(results),
            "--device", "cpu", "--workers", "0"]
    assert cv.main(args) == 0
    first = json.loads(results.read_text())["runs"]
    assert [r["status"] for r in first] == ["finished"], first
    folder = cv.run_dir(out, "smoke", 1, "supervised", 3)
    model = model_file(folder)
    assert sorted(first[0]["without_lcc"]["per_case"]) == sorted(cv.fold_split(names, 1)["held_out"])
    stamps = [f.stat().st_mtime_ns for f in (model, folder / "evaluation-without_lcc.json")]
    assert cv.main(args) == 0  # run again: nothing left to do
    assert [f.stat().st_mtime_ns for f in (model, folder / "evaluation-without_lcc.json")] == stamps
    assert json.loads(results.read_text())["runs"] == first


def test_runs_trained_at_once_each_get_their_share_of_the_cores_and_all_reach_the_results_file(tmp_path,
                                                                                                 monkeypatch):
    """--jobs 2: two real tiny trainings side by side, each told to use half the cores."""
    monkeypatch.setitem(la_accuracy.PROTOCOLS, "smoke",
                        ["--patch", "16", "16", "16", "--n-filters", "4", "--iterations", "2"])
    make_la(tmp_path / "LA")
    out, results = tmp_path / "out", tmp_path / "results.json"
    args = ["--protocol", "smoke", "--methods", "supervised", "--seeds", "3", "4", "--folds", "0", "--scorings",
            "without_lcc", "--la-root", str(tmp_path / "LA"), "--out", str(out), "--results", str(results),
            "--device", "cpu", "--workers", "0", "--jobs", "2"]
    assert cv.main(args) == 0
    runs = json.loads(results.read_text())["runs"]
    assert sorted((r["seed"], r["status"]) for r in runs) == [(3, "finished"), (4, "finished")]
    threads = max(1, os.cpu_count() // 2)
    for seed in (3, 4):
        start = json.loads((cv.run_dir(out, "smoke", 0, "supervised", seed) / "progress.jsonl").read_text()
                           .splitlines()[0])
        assert start["event"] == "start" and start["cpu_threads"] == threads
    assert all(r["hardware"].endswith(f"2 runs at once on {threads} thread(s) each") for r in runs)


def test_a_resumed_training_counts_the_time_it_trained_not_the_time_it_stood_still(tmp_path):
    progress = tmp_path / "progress.jsonl"
    events = [("start", 100), ("progress", 101), ("progress", 130),  # 30 s, then stopped for an hour
              ("start", 3730), ("progress", 3731), ("progress", 3750)]  # resumed: 20 s more
    progress.write_text("".join(json.dumps({"event": e, "time": t}) + "\n" for e, t in events))
    assert training_seconds(progress) == 50
    assert training_seconds(tmp_path / "absent.jsonl") is None  # only a model came back from a lease


def test_reporting_another_pair_leaves_the_default_pairs_figure_alone():
    figures = BENCHMARKS.parent / "docs" / "figures"
    assert default_figure("lite", list(cv.DEFAULT_METHODS)) == figures / "cross_validation_lite.png"
    other = default_figure("lite", ["supervised", "dtc"])
    assert other == figures / "cross_validation_lite_dtc_vs_supervised.png"
    assert default_figure("full", [DTC]) == figures / "cross_validation_full.png"  # one method: no comparison
