"""fastdavs.kernels: fused Triton kernels (temporal convolution, MFCC front end, contrastive
loss), each beside its plain-PyTorch reference. Installed from the top-level `kernels/` folder.

The kernels are delivered by issue 5; the references they are tested against live in
`fastdavs.audio` and `fastdavs.losses`.
"""
