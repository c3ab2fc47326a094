"""Label post-processing: the largest connected component, as the official test code's `--nms 1`."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_largest_component(label: np.ndarray) -> np.ndarray:
    """Largest 26-connected component (the first one on ties, as the official getLargestCC); an empty
    label stays empty."""
    components, count = ndimage.label(label, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return label
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    return (components == largest).astype(label.dtype)
