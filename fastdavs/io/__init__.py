"""Storage: files and directories written atomically (`atomic`), training checkpoints and run
directories (`checkpoint`), and the manifests that record what a directory holds (`manifest`).
Sits below training, evaluation and inference, which all read or write through it."""
