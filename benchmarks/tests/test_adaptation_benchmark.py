"""The adaptation benchmark's arms and splits, and the doubt benchmark's AUROC, on known answers."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptation import DEFAULT_ARMS, parse_arm, split  # noqa: E402
from doubt_quality import auroc  # noqa: E402


def test_every_default_arm_parses_and_names_say_what_they_train():
    assert [parse_arm(a)["labeled"] for a in ("dtc-finetune-4", "supervised-finetune-1", "dtc-scratch-all")] == [4, 1, "all"]
    assert parse_arm("dtc-finetune-2-doubt") == {"method": "dtc", "start": "finetune", "labeled": 2, "doubt": True,
                                                 "first": 0}
    assert parse_arm("dtc-finetune-1-from3")["first"] == 3
    assert parse_arm("zero-shot")["method"] is None
    for arm in DEFAULT_ARMS:
        parse_arm(arm)
    for bad in ("dtc-transfer-2", "semi-finetune-2", "dtc-finetune-2-random", "dtc-finetune-1-fromx"):
        with pytest.raises(SystemExit, match="unknown arm"):
            parse_arm(bad)


def test_a_seed_holds_out_the_same_scans_for_every_arm_and_seeds_differ():
    cases = [f"la_{i:03d}" for i in range(8)]
    held_out, pool = split(cases, 1337, 3)
    assert (held_out, pool) == split(cases, 1337, 3) and len(held_out) == 3 and sorted(held_out + pool) == cases
    assert split(cases, 2024, 3)[0] != held_out


def test_auroc_known_answers():
    wrong = np.array([False, False, True, True])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0  # every wrong voxel doubted more
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), wrong) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), wrong) == 0.5  # ties count half
    assert auroc(np.array([0.1, 0.6, 0.5, 0.9]), wrong) == 0.75
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([False, False])))
