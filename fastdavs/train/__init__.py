"""Training: the losses of each stage (`stages`), one optimiser step with its precision and data
parallelism (`step`), the loop over the schedule with checkpoints and logs (`loop`, `runlog`), and
the command (`cli`: `fastdavs-train`, `python -m fastdavs.train`). Reads data and the model,
writes through `fastdavs.io`."""
