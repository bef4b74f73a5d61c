"""Faults during `fastdavs-train`, through the command on the tiny preset: a
kill -9 in the middle of a checkpoint write, then `--resume`; a full disk during a checkpoint
save. Both leave the previous checkpoint loadable and the run resumable.

Covered elsewhere, not repeated here: kill -9 at random moments of `save_checkpoint`
(tests/test_checkpoint.py::test_kill_9_at_random_moments_leaves_a_loadable_latest), a failed
save's exact message and leftovers (::test_failed_save_keeps_the_previous_checkpoint), and a
resumed run's losses equal to an uninterrupted run's
(tests/test_train.py::test_resume_matches_an_uninterrupted_run).
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fastdavs.io.checkpoint as ckpt
from fastdavs.io.checkpoint import latest_checkpoint, load_checkpoint
from fastdavs.train.cli import main as train_main

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def _args(shards: Path, run: Path) -> list[str]:
    """pid only, a checkpoint after every step: saves are where the faults are injected."""
    return [
        "--preset", "tiny", "--workers", "0", "--data", str(shards), "--out", str(run),
        "--stage", "pid", "--schedule-pid-steps", str(STEPS), "--schedule-checkpoint-every", "1",
        "--no-eval",
    ]  # fmt: skip


COMMAND = "fastdavs-train --preset tiny --stage pid --schedule-checkpoint-every 1"


def _entries(run: Path) -> list[str]:
    return sorted(os.listdir(run / ckpt.CHECKPOINTS))


# A training process whose second checkpoint save stops after writing model.safetensors: it
# writes MARK (the half-written directory) and sleeps until killed.
_STALLING_TRAINER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import fastdavs.io.checkpoint as ckpt
    from fastdavs.train.cli import main

    real, saves = ckpt.file_entry, []

    def stall(path, **kwargs):
        entry = real(path, **kwargs)
        if path.name == ckpt.MODEL and path.parent.name.startswith(ckpt.TMP):
            saves.append(path.parent)
            if len(saves) == 2:
                Path(os.environ["MARK"]).write_text(str(path.parent))
                time.sleep(120)
        return entry

    ckpt.file_entry = stall
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill_9_during_a_checkpoint_write_then_resume(shards, tmp_path, robustness):
    run, mark = tmp_path / "run", tmp_path / "mark"
    args = _args(shards, run)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MARK": str(mark)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALLING_TRAINER, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None, f"the trainer exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "the trainer never reached its second save"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    half = Path(mark.read_text())
    assert half.exists() and not (half / ckpt.CONFIG).exists()  # killed mid-write
    assert _entries(run) == sorted(["latest", "pid_000001", half.name])
    first = latest_checkpoint(run)
    assert first == run / ckpt.CHECKPOINTS / "pid_000001"
    assert load_checkpoint(first, restore_rng=False)[1]["step"] == 1

    assert train_main([*args, "--resume"]) == 0
    _, state = load_checkpoint(latest_checkpoint(run), restore_rng=False)
    assert (state["stage"], state["step"], state["done"]) == ("pid", STEPS, ["pid"])
    assert _entries(run) == ["latest", f"pid_{STEPS - 1:06d}", f"pid_{STEPS:06d}"]  # no .tmp-*
    robustness.record(
        COMMAND + "; kill -9 in save 2; then --resume",
        f"killed: pid_000001 loads; resume exit 0 at step {STEPS}, .tmp-* removed",
    )


def test_full_disk_during_a_checkpoint_save(shards, tmp_path, monkeypatch, capsys, robustness):
    run = tmp_path / "run"
    args = _args(shards, run)
    real = ckpt.file_entry

    def disk_full_in_second_save(path, **kwargs):
        if path.parent.name.startswith(ckpt.TMP + "pid_000002"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, **kwargs)

    monkeypatch.setattr(ckpt, "file_entry", disk_full_in_second_save)
    assert train_main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fastdavs-train")]
    ckpt_dir = run / ckpt.CHECKPOINTS
    assert lines == [
        f"fastdavs-train: error: {ckpt_dir / 'pid_000002'}: cannot save the checkpoint (No space "
        f"left on device); {ckpt_dir / 'pid_000001'} is still the latest one"
    ]
    assert "Traceback" not in err
    assert _entries(run) == ["latest", "pid_000001"]  # nothing partial
    assert load_checkpoint(run, restore_rng=False)[1]["step"] == 1

    monkeypatch.setattr(ckpt, "file_entry", real)  # space freed: the run resumes and finishes
    assert train_main([*args, "--resume"]) == 0
    assert load_checkpoint(run, restore_rng=False)[1]["done"] == ["pid"]
    robustness.record(
        COMMAND + "; ENOSPC in save 2; then --resume",
        "exit 2, one line naming the save and the kept pid_000001; resume exit 0",
    )


# `--resume` under a real per-file size limit (RLIMIT_FSIZE, enforced by the kernel; SIGXFSZ
# ignored so that the write fails with EFBIG instead of killing the process): every file of a
# tiny checkpoint's weights is larger than the limit, the metrics and the loss plot are not.
_SIZE_LIMITED_TRAINER = textwrap.dedent(
    """
    import resource, signal, sys
    from fastdavs.train.cli import main

    limit = int(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(sys.argv[2:]))
    """
)


def test_file_size_limit_during_a_checkpoint_save(shards, tmp_path, robustness):
    run = tmp_path / "run"
    assert train_main([*_args(shards, run), "--steps", "1"]) == 0  # pid_000001, 2 steps to go
    model_bytes = (latest_checkpoint(run) / ckpt.MODEL).stat().st_size
    limit = 1 << 20
    assert model_bytes > limit  # the next save's weights cannot be written
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", _SIZE_LIMITED_TRAINER, str(limit), *_args(shards, run)]
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True)
    ckpt_dir = run / ckpt.CHECKPOINTS
    lines = [line for line in done.stderr.splitlines() if line.startswith("fastdavs-train")]
    assert done.returncode == 2, done.stderr
    assert lines == [
        f"fastdavs-train: error: {ckpt_dir / 'pid_000002'}: cannot save the checkpoint (File too "
        f"large); {ckpt_dir / 'pid_000001'} is still the latest one"
    ]
    assert "Traceback" not in done.stderr
    assert _entries(run) == ["latest", "pid_000001"]  # nothing partial
    assert load_checkpoint(run, restore_rng=False)[1]["step"] == 1

    assert train_main([*_args(shards, run), "--resume"]) == 0  # no limit: the run finishes
    assert load_checkpoint(run, restore_rng=False)[1]["done"] == ["pid"]
    robustness.record(
        COMMAND + "; --resume under RLIMIT_FSIZE 1 MiB; then --resume",
        "exit 2, one line (File too large) naming the save and the kept pid_000001; resume exit 0",
    )
