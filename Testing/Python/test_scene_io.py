"""Scene -> training files -> scene keeps the geometry (oblique, anisotropic), labels land on the
volume's grid whatever the segmentation's own geometry, results become one editable named segment."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from conftest import addVolume, obliqueMatrix, phantom

from DTCSegmentationLib import SceneIO
from DTCSegmentationLib.TrainingLogic import exportDataset
from DTCSegmentationLib.Parameters import LabeledPair
from dtc_training.metrics import dice


def ijkToRas(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def sitkIjkToRas(image):
    """The file's IJK-to-RAS (SimpleITK works in LPS)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = direction @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return np.diag([-1, -1, 1, 1]) @ m


def test_volume_roundtrip_keeps_oblique_anisotropic_geometry(scene, tmp_path):
    image, _ = phantom(0, size=(20, 24, 28))
    node = addVolume(scene, image, "oblique", obliqueMatrix())
    path = SceneIO.writeVolume(node, tmp_path / "v.nrrd")
    written = sitk.ReadImage(str(path))
    assert np.allclose(sitkIjkToRas(written), ijkToRas(node), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(written), image)
    back = SceneIO.readVolume(path, "back")
    assert np.allclose(ijkToRas(back), ijkToRas(node), atol=1e-5)
    assert np.array_equal(slicer.util.arrayFromVolume(back), image)


def test_a_failed_write_leaves_neither_a_file_nor_a_partial_one(scene, tmp_path):
    image, _ = phantom(0, size=(8, 8, 8))
    node = addVolume(scene, image, "v", obliqueMatrix())
    SceneIO.writeVolume(node, tmp_path / "kept.nrrd")
    before = (tmp_path / "kept.nrrd").read_bytes()
    with pytest.raises(OSError, match="v.notaformat"):
        SceneIO.writeVolume(node, tmp_path / "v.notaformat")  # no writer for this ending
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.nrrd"]
    SceneIO.writeVolume(node, tmp_path / "kept.nrrd")  # replaced whole
    assert (tmp_path / "kept.nrrd").read_bytes() == before
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeArchetypeStorageNode") == 0


def test_export_dataset_puts_every_label_on_its_volume_grid(phantomScene, tmp_path):
    pairs = [LabeledPair(v, l) for v, l in phantomScene["labeled"]]
    datalist = exportDataset(pairs, phantomScene["unlabeled"], tmp_path / "data")
    content = json.loads(datalist.read_text())
    assert len(content["labeled"]) == 3 and len(content["unlabeled"]) == 2
    for i, (entry, pair) in enumerate(zip(content["labeled"], pairs)):
        img = sitk.ReadImage(str(tmp_path / "data" / entry["image"]))
        lab = sitk.ReadImage(str(tmp_path / "data" / entry["label"]))
        assert np.allclose(sitkIjkToRas(img), ijkToRas(pair.volume), atol=1e-5)
        assert np.allclose(sitkIjkToRas(lab), ijkToRas(pair.volume), atol=1e-5), f"case {i}"
        assert lab.GetSize() == img.GetSize()
        label = sitk.GetArrayFromImage(lab)
        assert set(np.unique(label)) <= {0, 1}
        _, truth = phantom(i)
        # exact on the volume's grid; a label drawn on a coarser grid is resampled (nearest neighbour)
        assert dice(label > 0, truth > 0) > (0.99 if i != 1 else 0.8), f"case {i}"
    for entry, volume in zip(content["unlabeled"], phantomScene["unlabeled"]):
        img = sitk.ReadImage(str(tmp_path / "data" / entry["image"]))
        assert np.allclose(sitkIjkToRas(img), ijkToRas(volume), atol=1e-5)


def test_labelmap_with_several_values_exports_the_chosen_one(scene, tmp_path):
    image, label = phantom(0, size=(16, 16, 16))
    volume = addVolume(scene, image, "v", obliqueMatrix())
    multi = label.copy()
    multi[:2] = 2
    labelmap = addVolume(scene, multi, "multi", obliqueMatrix(), labelmap=True)
    assert [c.key for c in SceneIO.labelChoices(labelmap)] == ["1", "2"]
    path = SceneIO.exportLabel(labelmap, "2", volume, tmp_path / "l.nrrd")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), (multi == 2).astype(np.uint8))


def test_result_import_is_one_named_editable_segment_and_reruns_update_it(scene, tmp_path):
    image, label = phantom(1, size=(24, 20, 16))
    volume = addVolume(scene, image, "input", obliqueMatrix())
    resultNode = addVolume(scene, label, "result", obliqueMatrix(), labelmap=True)
    resultPath = SceneIO.writeVolume(resultNode, tmp_path / "result.nrrd")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "input segmentation")
    user = seg.GetSegmentation().AddEmptySegment("user", "My notes")  # a user's own segment survives reruns
    segmentId = SceneIO.importResult(resultPath, seg, volume)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2 and segmentation.GetSegment(user) is not None
    empty = SceneIO.segmentArray(seg, user, volume)  # an empty segment exports no voxels at all
    assert empty.shape == image.shape and not empty.any()
    segment = segmentation.GetSegment(segmentId)
    assert segment.GetName() == "Left atrium"
    assert "82471001" in segment.GetTerminology()
    assert SceneIO.segmentationMatchesVolume(seg, volume)
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is volume
    assert np.array_equal(SceneIO.segmentArray(seg, segmentId, volume), label)

    # editable: change voxels of the segment's labelmap and read them back
    internal = slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, segmentId)
    internal[...] = 0
    internal[0, 0, 0] = 1
    segment.Modified()
    assert SceneIO.segmentArray(seg, segmentId, volume).sum() == 1

    # saved as .seg.nrrd and reloaded
    path = SceneIO.writeSegmentation(seg, tmp_path / "out.seg.nrrd")
    again = SceneIO.readSegmentation(path)
    againId = again.GetSegmentation().GetSegmentIdBySegmentName("Left atrium")
    assert againId and SceneIO.segmentArray(again, againId, volume).sum() == 1

    # re-running updates the same segment: no new node, no new segment
    nodes = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    assert SceneIO.importResult(resultPath, seg, volume) == segmentId
    assert segmentation.GetNumberOfSegments() == 2
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes
    assert np.array_equal(SceneIO.segmentArray(seg, segmentId, volume), label)


def test_crop_to_roi_keeps_world_positions(scene):
    image, _ = phantom(2, size=(20, 20, 20))
    volume = addVolume(scene, image, "v", obliqueMatrix(angle=0.0))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    m = ijkToRas(volume)
    center = (m @ np.array([10, 10, 10, 1.0]))[:3]
    roi.SetCenter(*center)
    roi.SetSize(5, 5, 5)
    crop = SceneIO.cropToROI(volume, roi)
    array = slicer.util.arrayFromVolume(crop)
    assert 0 < array.size < image.size
    cm = ijkToRas(crop)
    # voxel (0,0,0) of the crop is a voxel of the input at the same RAS position with the same value
    ijk = np.linalg.inv(m) @ cm @ np.array([0, 0, 0, 1.0])
    i, j, k = np.round(ijk[:3]).astype(int)
    assert np.allclose(ijk[:3], (i, j, k), atol=1e-4)
    assert array[0, 0, 0] == image[k, j, i]


def test_an_empty_result_on_a_roi_grid_reads_back_as_background(scene, tmp_path):
    # A result cropped to a ROI that holds no atrium: its segment has no voxels, and reading it back on the
    # whole volume's grid must give zeros, not a crash.
    import vtk

    image, _ = phantom(1, size=(24, 20, 16))
    volume = addVolume(scene, image, "input", obliqueMatrix())
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(*(ijkToRas(volume) @ np.array([8.0, 8.0, 8.0, 1.0]))[:3])
    roi.SetSize(5, 5, 5)
    crop = SceneIO.cropToROI(volume, roi)
    m = vtk.vtkMatrix4x4()
    crop.GetIJKToRASMatrix(m)
    resultNode = addVolume(scene, np.zeros_like(slicer.util.arrayFromVolume(crop), np.uint8), "result", m, labelmap=True)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "input segmentation")
    segmentId = SceneIO.importResult(SceneIO.writeVolume(resultNode, tmp_path / "result.nrrd"), seg, volume)
    assert seg.GetSegmentation().GetSegment(segmentId).GetName() == "Left atrium"
    result = SceneIO.segmentArray(seg, segmentId, volume)
    assert result.shape == image.shape and not result.any()


def test_a_labelmap_read_outside_slicer_finds_its_colour_table_without_a_vtk_warning(scene, tmp_path, capfd):
    # Slicer's Colors module adds the default colour tables; under slicer-core SceneIO adds them, or every
    # `batch.py segment` ends with "the color table node: vtkMRMLColorTableNodeLabels can't be found"
    path = SceneIO.writeVolume(addVolume(scene, np.ones((4, 4, 4), np.uint8), "label", labelmap=True),
                               tmp_path / "label.nrrd")
    capfd.readouterr()  # the test's own labelmap, made on a bare scene, may warn: not SceneIO's business
    fresh = slicer.vtkMRMLScene()
    labelmap = SceneIO.readVolume(path, labelmap=True, mrmlScene=fresh)
    assert labelmap.GetDisplayNode().GetColorNode() is not None
    fresh.Clear(1)
    assert "can't be found" not in capfd.readouterr().err
