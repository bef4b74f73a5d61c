"""The DAVS model: one module per role, assembled by `DavsModel` (see davs.py for the data flow)."""

from fastdavs.model.davs import DavsModel, EncodedIdentity
from fastdavs.model.identity_encoder import IdentityFeatures
from fastdavs.model.mouth_editor import EditorIdentity, MouthEditor

__all__ = ["DavsModel", "EditorIdentity", "EncodedIdentity", "IdentityFeatures", "MouthEditor"]
