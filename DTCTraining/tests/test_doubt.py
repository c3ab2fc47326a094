"""The two heads' doubt (`segment(uncertainty=True)`, `dtc infer --uncertainty`, `dtc rank`): zero where the
heads agree, high where they disagree, on the input's grid, the same for a reoriented scan, a score that
ignores the field of view, and nothing changed for the segmentation it comes with.

The networks are the threshold network of test_infer (seg = relu(z) - 0.5, voxel by voxel) with heads set
steep enough to be exactly 0 or 1: `agreeing` makes the level-set head say what the segmentation head says,
`opposed` the opposite, and `seg_only` a level-set head that says "background" everywhere."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run_dtc
from dtc_training.commands.rank import ranked
from dtc_training.doubt import doubt_score
from dtc_training.infer import Model, segment
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import save_model
from dtc_training.quantization import available_engine
from dtc_training.trainer import MODEL_NAME
from test_infer import PATCH, assert_same_grid, ball_image, threshold_network

STEEP = 1000.0  # |seg| and |levelset| saturate: sigmoid and tanh give exactly 0 or 1 away from r = 0.5
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
META = {"n_filters": 4, "in_channels": 1, "patch_size": PATCH, "spacing": [1.0, 1.0, 1.0],
        "normalization": "zscore", "k": 1500.0, "label_name": "ball"}


def two_head_model(path, levelset: str) -> Model:
    net = threshold_network()
    with torch.no_grad():
        net.out_conv2.weight[0, 0] *= STEEP
        net.out_conv2.bias.fill_(-0.5 * STEEP)  # seg = STEEP (r - 0.5): inside the ball 1, outside 0
        if levelset == "agreeing":  # negative inside, as a level set is: sigmoid(-k tanh(.)) = the segmentation
            net.out_conv.weight[0, 0, 0] = -STEEP
            net.out_conv.bias.fill_(0.5 * STEEP)
        elif levelset == "opposed":
            net.out_conv.weight[0, 0, 0] = STEEP
            net.out_conv.bias.fill_(-0.5 * STEEP)
        else:  # "seg_only": tanh(1) > 0 everywhere, so the level set calls every voxel background
            net.out_conv.bias.fill_(1.0)
    return Model.load(save_model(path / f"{levelset}.safetensors", net, META), "cpu")


def on_model_grid():
    image, _, _ = ball_image(spacing=(1.0, 1.0, 1.0), direction=IDENTITY)
    return image


def array(image):
    return sitk.GetArrayFromImage(image)


@pytest.mark.parametrize("mode, orientations", [("fast", 1), ("fast", 4), ("official", 1)])
def test_the_doubt_is_zero_where_the_heads_agree_and_one_where_they_disagree(tmp_path, mode, orientations):
    image = on_model_grid()
    options = dict(mode=mode, orientations=orientations, precision="fp32", uncertainty=True)
    agreeing = segment(image, two_head_model(tmp_path, "agreeing"), **options)
    label = array(agreeing.label)
    assert 0 < label.sum() < label.size  # the ball and its background, both present
    assert agreeing.doubt.GetPixelID() == sitk.sitkFloat32
    assert array(agreeing.doubt).max() == 0.0 and agreeing.doubt_score == 0.0
    opposed = segment(image, two_head_model(tmp_path, "opposed"), **options)
    assert array(opposed.doubt).min() == 1.0 and opposed.doubt_score == 1.0
    seg_only = segment(image, two_head_model(tmp_path, "seg_only"), **options)  # the heads disagree on the ball
    np.testing.assert_array_equal(array(seg_only.doubt), label.astype(np.float32))
    assert seg_only.doubt_score == 1.0 and seg_only.info["doubt_score"] == 1.0


def test_the_doubt_map_has_the_input_grid(tmp_path):
    image, _, _ = ball_image()  # oblique and anisotropic: resampled to the model's grid and back
    result = segment(image, two_head_model(tmp_path, "seg_only"), precision="fp32", uncertainty=True)
    assert result.info["resampled"]
    assert_same_grid(result.doubt, image)
    doubt, label = array(result.doubt), array(result.label)
    assert doubt[label == 1].min() > 0.5 and doubt[label == 0].mean() < 0.05


def test_numpy_in_numpy_out(tmp_path):
    volume = array(on_model_grid()).transpose(2, 1, 0)
    result = segment(volume, two_head_model(tmp_path, "seg_only"), precision="fp32", uncertainty=True)
    assert isinstance(result.doubt, np.ndarray) and result.doubt.shape == volume.shape
    np.testing.assert_array_equal(result.doubt, result.label.astype(np.float32))


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """An untrained network: its heads disagree by different amounts from voxel to voxel, and it sees how
    the axes reach it."""
    torch.manual_seed(0)
    meta = {**META, "spacing": [1.0, 1.0, 1.0]}
    return Model.load(save_model(tmp_path_factory.mktemp("random") / "m.safetensors",
                                 DualTaskVNet(n_filters=4).eval(), meta), "cpu")


def scan(size=(40, 36, 20), spacing=(1.0, 1.0, 1.0)):
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in size), indexing="ij")
    values = np.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2 * 2 + (z - 0.1) ** 2 * 3) * 4) + 0.3 * x - 0.2 * z
    image = sitk.GetImageFromArray(values.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing(spacing)
    return image


@pytest.mark.parametrize("code", ["PIR", "ASL"])
def test_a_reoriented_scan_gets_the_same_doubt(random_model, code):
    image = scan(spacing=(1.3, 0.9, 1.6))
    original = segment(image, random_model, precision="fp32", uncertainty=True)
    other = segment(sitk.DICOMOrient(image, code), random_model, precision="fp32", uncertainty=True)
    assert other.info["reoriented"]
    assert other.doubt.GetSize() == sitk.DICOMOrient(image, code).GetSize()
    back = array(sitk.DICOMOrient(other.doubt, "LPS"))
    assert back.std() > 1e-3  # a map that varies, so that a misplaced voxel would show
    np.testing.assert_allclose(back, array(original.doubt), atol=1e-5)
    assert other.doubt_score == pytest.approx(original.doubt_score, abs=1e-5)


PRECISIONS = ["fp32"] + (["int8"] if available_engine() else [])


@pytest.mark.parametrize("mode, precision, orientations",
                         [("fast", p, 1) for p in PRECISIONS] + [("fast", "fp32", 2), ("official", "fp32", 1)])
def test_asking_for_the_doubt_leaves_the_probabilities_bit_identical(random_model, mode, precision, orientations):
    image = scan(size=(34, 33, 18), spacing=(1.2, 1.0, 1.1))
    options = dict(mode=mode, precision=precision, orientations=orientations, probability=True)
    without = segment(image, random_model, **options)
    with_doubt = segment(image, random_model, uncertainty=True, **options)
    assert without.doubt is None and "doubt_score" not in without.info
    assert np.array_equal(array(without.probability), array(with_doubt.probability))
    assert np.array_equal(array(without.label), array(with_doubt.label))
    assert with_doubt.doubt_score is not None and array(with_doubt.doubt).max() > 0


def test_the_score_does_not_change_with_the_field_of_view():
    rng = np.random.default_rng(0)
    prob, levelset_prob = rng.random((20, 20, 20)), rng.random((20, 20, 20))
    prob[:5], levelset_prob[:5] = 0.0, 0.1  # background both heads call background, with a little doubt
    doubt = np.abs(prob - levelset_prob)
    score = doubt_score(prob, doubt, levelset_prob)
    padded = [np.pad(a, 30, constant_values=v) for a, v in ((prob, 0.2), (doubt, 0.1), (levelset_prob, 0.3))]
    assert doubt_score(*padded) == pytest.approx(score, rel=1e-12)
    assert score != pytest.approx(doubt.mean())  # not a mean over every voxel
    assert doubt_score(np.zeros(8), np.full(8, 0.3), np.zeros(8)) is None  # neither head finds foreground


def test_dtc_infer_writes_the_doubt_map_beside_the_label_and_the_score_in_the_report(tmp_path):
    model = two_head_model(tmp_path, "seg_only")
    sitk.WriteImage(on_model_grid(), str(tmp_path / "scan.nrrd"))
    proc = run_dtc("infer", "--model", tmp_path / "seg_only.safetensors", tmp_path / "scan.nrrd",
                   "-o", tmp_path / "out", "--uncertainty", "--precision", "fp32", "--device", "cpu",
                   "--report", tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())["reports"][0]
    doubt_file = tmp_path / "out" / "scan-doubt.nrrd"
    assert report["doubt"] == str(doubt_file) and report["doubt_score"] == 1.0
    assert "doubt 1.0000" in proc.stderr
    written = sitk.ReadImage(str(doubt_file))
    assert written.GetPixelID() == sitk.sitkFloat32
    expected = segment(on_model_grid(), model, precision="fp32", uncertainty=True).doubt
    np.testing.assert_array_equal(array(written), array(expected))
    # dtc evaluate skips it beside the label (here a folder of predictions against a list of one truth)
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "out" / "scan-label.nrrd")), str(tmp_path / "truth.nrrd"))
    scored = run_dtc("evaluate", "--pred", tmp_path / "out", "--gt", tmp_path / "truth.nrrd",
                     "--json", tmp_path / "scores.json")
    assert json.loads((tmp_path / "scores.json").read_text())["mean"]["dice"] == 1.0, scored.stdout
    # a second run over the folder skips the doubt map it wrote, as it skips labels
    again = run_dtc("infer", "--model", tmp_path / "seg_only.safetensors", tmp_path / "out", "-o", tmp_path / "again",
                    "--precision", "fp32", "--device", "cpu", check=False)
    assert again.returncode == 2 and "skipping 2 earlier results" in again.stderr


def test_rank_puts_scans_without_a_score_first_then_the_most_doubtful():
    reports = [{"input": "a", "doubt_score": 0.1}, {"input": "b", "doubt_score": None},
               {"input": "c", "doubt_score": 0.3}, {"input": "d", "doubt_score": 0.2}]
    assert [r["input"] for r in ranked(reports)] == ["b", "c", "d", "a"]


def test_dtc_rank_orders_scans_by_their_infer_score(phantoms, trained_run, tmp_path):
    model = trained_run[0] / MODEL_NAME
    scans = sorted((phantoms.parent / "images").glob("*.nrrd"))[:4]
    options = ["--device", "cpu", "--precision", "fp32"]
    scores = {}
    for scan_file in scans:
        run_dtc("infer", "--model", model, scan_file, "-o", tmp_path / f"{scan_file.stem}-label.nrrd",
                "--uncertainty", "--report", tmp_path / "one.json", *options)
        scores[str(scan_file)] = json.loads((tmp_path / "one.json").read_text())["reports"][0]["doubt_score"]
    assert None not in scores.values() and len(set(scores.values())) == len(scans)  # an order to get right
    proc = run_dtc("rank", "--model", model, *scans, "--json", tmp_path / "rank.json", *options, in_process=True)
    expected = sorted(scores, key=scores.get, reverse=True)
    ranking = json.loads((tmp_path / "rank.json").read_text())["ranking"]
    assert [r["input"] for r in ranking] == expected and [r["rank"] for r in ranking] == [1, 2, 3, 4]
    assert [r["doubt_score"] for r in ranking] == pytest.approx([scores[s] for s in expected], abs=1e-6)
    printed = [line.split()[-1] for line in proc.stdout.splitlines()[1:]]
    assert printed == expected
