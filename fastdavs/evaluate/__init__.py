"""Evaluation of a trained run on held-out identities: the metrics (`metrics`), the model-free jaw
probe (`jaw_probe`), the whole evaluation and its table (`run`), and the command (`cli`:
`fastdavs-eval`, `python -m fastdavs.evaluate`). Reads checkpoints through `fastdavs.io`."""
