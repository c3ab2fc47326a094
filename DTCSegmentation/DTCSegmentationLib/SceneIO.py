"""Moving data between the MRML scene and files, using only MRML classes (no Qt, no `slicer.app`), so
the same code runs inside Slicer and under plain Python with the `slicer-core` wheel.

* volumes are written and read through `vtkMRMLVolumeArchetypeStorageNode` (NRRD keeps the geometry);
* a label source (segmentation node + segment, or labelmap node + label value) is exported as a 0/1
  labelmap on the grid of a reference volume, whatever the source's own geometry;
* an inference result (labelmap file) is imported as one named segment, updating that segment in place.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk

LEFT_ATRIUM_NAME = "Left atrium"
LEFT_ATRIUM_SEGMENT_ID = "left_atrium"
# Slicer terminology entry: DICOM master list, SCT 123037004 "Anatomical Structure" / SCT 82471001 "Left atrium".
LEFT_ATRIUM_TERMINOLOGY = (
    "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
    "~SCT^82471001^Left atrium~^^~Anatomic codes - DICOM master list~^^~^^|"
)
LEFT_ATRIUM_COLOR = (0.81, 0.43, 0.33)  # the module's colour for the left atrium (a heart tone)

_logics: dict[int, tuple] = {}  # keeps slicer-core logics alive per scene


def scene() -> "slicer.vtkMRMLScene":
    """The scene in use: Slicer's, or a new one (assigned to `slicer.mrmlScene`) under slicer-core."""
    if getattr(slicer, "mrmlScene", None) is None:
        slicer.mrmlScene = slicer.vtkMRMLScene()
    return slicer.mrmlScene


def segmentationsLogic(mrmlScene=None):
    """The Segmentations module logic. In Slicer it exists already; under slicer-core it is created once per
    scene together with an application logic, which registers the representation converters, and the
    default colour tables, which Slicer's Colors module adds: a labelmap's display node looks up
    "vtkMRMLColorTableNodeLabels" and VTK warns that it "can't be found" without them."""
    mrmlScene = mrmlScene or scene()
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "segmentations"):
        return modules.segmentations.logic()
    key = id(mrmlScene)
    if key not in _logics or _logics[key][0] is not mrmlScene:
        app = slicer.vtkSlicerApplicationLogic()
        app.SetMRMLScene(mrmlScene)
        colors = slicer.vtkMRMLColorLogic()  # the built-in tables only: no color files outside Slicer
        colors.SetMRMLScene(mrmlScene)
        app.SetColorLogic(colors)
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(mrmlScene)
        logic.SetMRMLApplicationLogic(app)
        _logics[key] = (mrmlScene, app, colors, logic)
    return _logics[key][-1]


# ---------------------------------------------------------------------------------------------- volumes
def isScalarVolume(node) -> bool:
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        return False  # vector, tensor and other volume kinds are not scalar volume nodes
    image = node.GetImageData()
    return image is not None and image.GetNumberOfScalarComponents() == 1


def _writeThroughStorageNode(node, storage, path: str | os.PathLike) -> Path:
    """Write `node` with a temporary storage node, atomically: into a private folder next to `path`
    (same file system; the storage node picks the format from the name and may leave scratch files
    there), checked (not empty, its header reads back), then renamed into place, so a crash or a full disk
    never leaves an empty or half file. A `path` that is a file the scene was read from is refused."""
    # the backend's output guard and image check (imported here: the module loads where it is missing)
    from dtc_training.files import WriteError, check_outputs
    from dtc_training.volumes import check_image_file

    path = Path(path)
    mrmlScene = node.GetScene()
    check_outputs([path], _sceneFiles(mrmlScene))  # an InputError (a ValueError) naming both
    scratch = Path(tempfile.mkdtemp(prefix=".dtc-write-", dir=path.parent))
    mrmlScene.AddNode(storage)
    try:
        storage.SetFileName(str(scratch / path.name))
        try:
            if not storage.WriteData(node):
                raise WriteError(errno.EIO, f"could not write {node.GetClassName()} {node.GetName()!r}", "")
            check_image_file(scratch / path.name)
        except WriteError as e:
            raise WriteError(e.errno, e.strerror, str(path)) from None
        os.replace(scratch / path.name, path)
    finally:
        mrmlScene.RemoveNode(storage)
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def _sceneFiles(mrmlScene) -> list[str]:
    """The files the scene's nodes were read from (or saved to): inputs that an export must not replace."""
    storages = mrmlScene.GetNodesByClass("vtkMRMLStorageNode")
    names = []
    for i in range(storages.GetNumberOfItems()):
        storage = storages.GetItemAsObject(i)
        names += [storage.GetFileName()] + [storage.GetNthFileName(j) for j in range(storage.GetNumberOfFileNames())]
    return [name for name in names if name]


def writeVolume(volumeNode, path: str | os.PathLike, compress: bool = False) -> Path:
    """Write a volume with its geometry (origin, spacing, directions)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(1 if compress else 0)
    return _writeThroughStorageNode(volumeNode, storage, path)


def readVolume(path: str | os.PathLike, name: str | None = None, labelmap: bool = False, mrmlScene=None):
    """Read a volume file into a new scalar (or labelmap) volume node, with a storage node attached."""
    mrmlScene = mrmlScene or scene()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    segmentationsLogic(mrmlScene)  # under slicer-core: the colour tables that display nodes look up
    node = mrmlScene.AddNewNodeByClass(cls, name or path.name.split(".")[0])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    mrmlScene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        mrmlScene.RemoveNode(node)
        mrmlScene.RemoveNode(storage)
        raise OSError(f"{path}: not a readable volume")
    node.CreateDefaultDisplayNodes()
    return node


def sameGeometry(a, b, tol: float = 1e-4) -> bool:
    """True when two volume-like nodes (or a segmentation's reference geometry) share the voxel grid."""
    ma, mb = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    a.GetIJKToRASMatrix(ma)
    b.GetIJKToRASMatrix(mb)
    if any(abs(ma.GetElement(i, j) - mb.GetElement(i, j)) > tol for i in range(4) for j in range(4)):
        return False
    return tuple(a.GetImageData().GetDimensions()) == tuple(b.GetImageData().GetDimensions())


def segmentationMatchesVolume(segmentationNode, volumeNode) -> bool:
    """Whether the segmentation's reference geometry is the volume's grid (otherwise export resamples)."""
    tag = segmentationNode.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not tag:
        return False
    image = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(tag, image, False)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    mv = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(mv)
    if any(abs(m.GetElement(i, j) - mv.GetElement(i, j)) > 1e-4 for i in range(4) for j in range(4)):
        return False
    return tuple(image.GetDimensions()) == tuple(volumeNode.GetImageData().GetDimensions())


# ------------------------------------------------------------------------------------------ label sources
@dataclass
class LabelChoice:
    """One segment of a segmentation, or one label value of a labelmap."""
    key: str  # segment ID, or the label value as text
    name: str


def labelChoices(labelNode) -> list[LabelChoice]:
    """The segments (segmentation node) or non-zero label values (labelmap node) the user can choose from."""
    if labelNode is None:
        return []
    if labelNode.IsA("vtkMRMLSegmentationNode"):
        seg = labelNode.GetSegmentation()
        return [LabelChoice(seg.GetNthSegmentID(i), seg.GetNthSegment(i).GetName())
                for i in range(seg.GetNumberOfSegments())]
    if labelNode.IsA("vtkMRMLLabelMapVolumeNode") and labelNode.GetImageData() is not None:
        values = np.unique(slicer.util.arrayFromVolume(labelNode))
        return [LabelChoice(str(int(v)), f"label {int(v)}") for v in values if v != 0]
    return []


def exportLabel(labelNode, key: str | None, referenceVolume, path: str | os.PathLike) -> Path:
    """Write the chosen segment / label value of `labelNode` as a 0/1 uint8 labelmap on the exact grid of
    `referenceVolume` (resampling when the label source has another geometry)."""
    mrmlScene = referenceVolume.GetScene()
    choices = labelChoices(labelNode)
    if key is None:
        if len(choices) != 1:
            raise ValueError(f"{labelNode.GetName()}: choose one of {len(choices)} segments")
        key = choices[0].key
    logic = segmentationsLogic(mrmlScene)
    temporary = []
    try:
        if labelNode.IsA("vtkMRMLLabelMapVolumeNode"):
            binary = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "dtc-binary")
            temporary.append(binary)
            binary.CopyOrientation(labelNode)
            source = slicer.util.arrayFromVolume(labelNode)
            slicer.util.updateVolumeFromArray(binary, (source == int(key)).astype(np.uint8))
            seg = mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "dtc-temp")
            temporary.append(seg)
            logic.ImportLabelmapToSegmentationNode(binary, seg)
            segmentId = seg.GetSegmentation().GetNthSegmentID(0) if seg.GetSegmentation().GetNumberOfSegments() else None
        else:
            seg, segmentId = labelNode, key
        out = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "dtc-export")
        temporary.append(out)
        if segmentId is None:  # empty labelmap: an all-zero label on the reference grid
            out.CopyOrientation(referenceVolume)
            slicer.util.updateVolumeFromArray(
                out, np.zeros(slicer.util.arrayFromVolume(referenceVolume).shape, np.uint8))
        else:
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segmentId)
            if not logic.ExportSegmentsToLabelmapNode(seg, ids, out, referenceVolume):
                raise RuntimeError(f"{labelNode.GetName()}: could not export segment {segmentId!r}")
            array = slicer.util.arrayFromVolume(out)
            slicer.util.updateVolumeFromArray(out, (array > 0).astype(np.uint8))
            out.CopyOrientation(referenceVolume)
        return writeVolume(out, path)
    finally:
        for node in temporary:
            mrmlScene.RemoveNode(node)


# ------------------------------------------------------------------------------------------- results
def findResultSegment(segmentationNode, name: str = LEFT_ATRIUM_NAME) -> str | None:
    seg = segmentationNode.GetSegmentation()
    if seg.GetSegment(LEFT_ATRIUM_SEGMENT_ID) is not None:
        return LEFT_ATRIUM_SEGMENT_ID
    segmentId = seg.GetSegmentIdBySegmentName(name)
    return segmentId or None


def importResult(labelmapPath: str | os.PathLike, segmentationNode, referenceVolume,
                 name: str = LEFT_ATRIUM_NAME, show3D: bool = True) -> str:
    """Import a 0/1 result labelmap as the segment `name` of `segmentationNode`: the segment is created
    once (standard name, colour, terminology) and updated in place on later runs, other segments are kept.
    Returns the segment ID."""
    mrmlScene = segmentationNode.GetScene()
    logic = segmentationsLogic(mrmlScene)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(),
                                        referenceVolume.GetID())
    seg = segmentationNode.GetSegmentation()
    segmentId = findResultSegment(segmentationNode, name)
    if segmentId is None:
        segmentId = seg.AddEmptySegment(LEFT_ATRIUM_SEGMENT_ID, name, list(LEFT_ATRIUM_COLOR))
    labelmap = readVolume(labelmapPath, "dtc-result", labelmap=True, mrmlScene=mrmlScene)
    labelmap.SetAndObserveTransformNodeID(referenceVolume.GetTransformNodeID())  # the volume's own coordinates
    try:
        array = slicer.util.arrayFromVolume(labelmap)
        slicer.util.updateVolumeFromArray(labelmap, (array > 0).astype(np.uint8))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        if not logic.ImportLabelmapToSegmentationNode(labelmap, segmentationNode, ids):
            raise RuntimeError(f"{labelmapPath}: could not import the result into {segmentationNode.GetName()}")
    finally:
        storage = labelmap.GetStorageNode()
        mrmlScene.RemoveNode(labelmap)
        if storage is not None:
            mrmlScene.RemoveNode(storage)
    segment = seg.GetSegment(segmentId)
    segment.SetName(name)
    segment.SetColor(*LEFT_ATRIUM_COLOR)
    if hasattr(segment, "SetTerminology"):  # Slicer >= 5.8
        segment.SetTerminology(LEFT_ATRIUM_TERMINOLOGY)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), LEFT_ATRIUM_TERMINOLOGY)
    if show3D:
        segmentationNode.CreateClosedSurfaceRepresentation()
    return segmentId


def segmentArray(segmentationNode, segmentId: str, referenceVolume) -> np.ndarray:
    """The segment as a 0/1 array (k, j, i) on the grid of `referenceVolume` (a copy)."""
    mrmlScene = segmentationNode.GetScene()
    out = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "dtc-read")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        segmentationsLogic(mrmlScene).ExportSegmentsToLabelmapNode(segmentationNode, ids, out, referenceVolume)
        image = out.GetImageData()
        if image is None or image.GetPointData().GetScalars() is None:  # an empty segment exports no voxels
            return np.zeros(slicer.util.arrayFromVolume(referenceVolume).shape, np.uint8)
        return (slicer.util.arrayFromVolume(out) > 0).astype(np.uint8)
    finally:
        mrmlScene.RemoveNode(out)


def writeSegmentation(segmentationNode, path: str | os.PathLike) -> Path:
    """Write a `.seg.nrrd` file that Slicer loads as a segmentation."""
    return _writeThroughStorageNode(segmentationNode, slicer.vtkMRMLSegmentationStorageNode(), path)


def readSegmentation(path: str | os.PathLike, name: str | None = None, mrmlScene=None):
    mrmlScene = mrmlScene or scene()
    segmentationsLogic(mrmlScene)
    node = mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or Path(path).name.split(".")[0])
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    mrmlScene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise OSError(f"{path}: not a readable segmentation")
    node.CreateDefaultDisplayNodes()
    return node


def cropToROI(volumeNode, roiNode, name: str = "dtc-crop"):
    """A new volume node holding the voxels of `volumeNode` inside the markups ROI (axis-aligned in the
    volume's voxel grid, at least one voxel), with the matching IJK-to-RAS matrix; ValueError for an ROI
    that misses the volume."""
    mrmlScene = volumeNode.GetScene()
    bounds = [0.0] * 6
    roiNode.GetRASBounds(bounds)
    rasToIjk = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(rasToIjk)
    corners = []
    for x in bounds[0:2]:
        for y in bounds[2:4]:
            for z in bounds[4:6]:
                corners.append(rasToIjk.MultiplyPoint((x, y, z, 1.0))[:3])
    corners = np.array(corners)
    dims = np.array(volumeNode.GetImageData().GetDimensions())
    if (corners.max(0) < -0.5).any() or (corners.min(0) > dims - 0.5).any():
        raise ValueError(f"the ROI {roiNode.GetName()} does not overlap {volumeNode.GetName()}")
    lo = np.clip(np.floor(corners.min(0)).astype(int), 0, dims - 1)
    hi = np.clip(np.ceil(corners.max(0)).astype(int), lo, dims - 1)
    array = slicer.util.arrayFromVolume(volumeNode)[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
    crop = mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    origin = ijkToRas.MultiplyPoint((float(lo[0]), float(lo[1]), float(lo[2]), 1.0))[:3]
    for i in range(3):
        ijkToRas.SetElement(i, 3, origin[i])
    slicer.util.updateVolumeFromArray(crop, np.ascontiguousarray(array))
    crop.SetIJKToRASMatrix(ijkToRas)
    return crop
