"""fastdavs.kernels: fused Triton kernels (temporal convolution, MFCC front end, contrastive
loss), each beside its plain-PyTorch reference. Installed from the top-level `kernels/` folder.

Each op's plain-PyTorch reference (the definition it is tested against) sits beside it:
`mfcc_ref` with the MFCC recipe's constants and matrices, `contrastive_loss_ref` with
`sequence_embedding`, `temporal_conv_ref`. The bottom layer: nothing here imports another
fastdavs module (`fastdavs.data.audio` and `fastdavs.model.losses` call in from above).
"""

from fastdavs.kernels.contrastive import (
    ContrastiveBlocks,
    contrastive_loss,
    contrastive_loss_ref,
    contrastive_workspace_bytes,
)
from fastdavs.kernels.dispatch import BACKENDS, KernelError
from fastdavs.kernels.mfcc import MfccBlocks, mfcc, mfcc_ref
from fastdavs.kernels.temporal_conv import (
    fold_batchnorm,
    temporal_conv,
    temporal_conv_backend,
    temporal_conv_ref,
)

__all__ = [
    "BACKENDS",
    "ContrastiveBlocks",
    "KernelError",
    "MfccBlocks",
    "contrastive_loss",
    "contrastive_loss_ref",
    "contrastive_workspace_bytes",
    "fold_batchnorm",
    "mfcc",
    "mfcc_ref",
    "temporal_conv",
    "temporal_conv_backend",
    "temporal_conv_ref",
]
