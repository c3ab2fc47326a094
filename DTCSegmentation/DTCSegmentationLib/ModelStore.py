"""The model store as the module uses it: the backend's (`dtc_training.model_store`: the store folder, the
built-in models, the catalog's downloads; torch-free), with the children that convert models running in
Slicer's Python with the bundled backend, as the module's other children do.

Folder: `$DTC_MODEL_STORE`, else `~/.dtcsegmentation/models`.
"""
from __future__ import annotations

import os
from typing import Optional

from dtc_training import model_store
from dtc_training.model_store import ModelInfo, ModelStoreError, defaultRoot  # noqa: F401  (the module's names)

from .Process import backendEnvironment, pythonExecutable


class ModelStore(model_store.ModelStore):
    def __init__(self, root: Optional[str | os.PathLike] = None, builtin: Optional[str | os.PathLike] = None):
        super().__init__(root, builtin, python=pythonExecutable(), env=backendEnvironment())
