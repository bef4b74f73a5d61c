"""The DAVS model: one module per role, assembled by `DavsModel` (see davs.py for the data flow)."""

from fastdavs.model.davs import DavsModel
from fastdavs.model.identity_encoder import IdentityFeatures

__all__ = ["DavsModel", "IdentityFeatures"]
