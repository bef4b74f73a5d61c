"""`fastdavs-eval RUN_OR_CHECKPOINT`: lip reading, audio-video retrieval, disentanglement probes,
generation quality (beside the identity-copy baseline and shuffled-speech controls, and the jaw
opening read from pixels against SynthLRW's ground truth) and sync on held-out clips, as a
metrics JSON and a readable table.

The evaluation itself is `fastdavs.evaluate.run`; this module finds the checkpoint, the data (the
run's `run.json` unless --data is given) and where to write (RUN/eval.json unless --out).

Disentanglement is judged against its ablation: a run trained the same way with
`--no-disentangle`, evaluated on the same split. Its `eval.json` is found at
RUN/no-disentangle/eval.json (train it with `--out RUN/no-disentangle`), or named with
--ablation; its probes and word accuracies are then shown beside the run's and kept in this
run's results under "ablation".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from fastdavs.cli import Parser, run
from fastdavs.errors import DataError, FastdavsError
from fastdavs.evaluate.run import check_writable, evaluate, format_table, write_results
from fastdavs.io.checkpoint import (
    CHECKPOINTS,
    TRAINER,
    latest_checkpoint,
    load_model,
    run_data,
    run_dir,
)

PROG = "fastdavs-eval"
RESULTS_FILE = "eval.json"
ABLATION_DIR = "no-disentangle"  # RUN/no-disentangle: the run's --no-disentangle ablation


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Evaluate a trained DAVS model.")
    parser.add_argument(
        "run_dir",
        metavar="RUN_OR_CHECKPOINT",
        help="a run directory (its latest checkpoint) or a checkpoint directory",
    )
    parser.add_argument(
        "--data", metavar="DIR", help="prepared shards (default: the run's, from RUN/run.json)"
    )
    parser.add_argument("--out", metavar="FILE", help="metrics JSON (default: RUN/eval.json)")
    parser.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="clips to evaluate (default: test, the held-out identities; val if there is none)",
    )
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per pass")
    parser.add_argument("--device", help="e.g. cpu, cuda:1 (default: cuda if available, else cpu)")
    parser.add_argument(
        "--ablation",
        metavar="RUN_OR_FILE",
        help="the --no-disentangle ablation's run directory or eval.json, shown beside the "
        f"probes (default: RUN/{ABLATION_DIR}/{RESULTS_FILE} if it exists)",
    )
    return parser


def _ablation(arg: str | None, run_dir: Path | None, split: str) -> dict | None:
    """{"eval", "lip_reading", "probes"} of the ablation's results, or None where there is none.

    Raises:
        DataError: --ablation names no eval.json, an unreadable one, or one of another split."""
    if arg is None:
        path = run_dir / ABLATION_DIR / RESULTS_FILE if run_dir is not None else None
        if path is None or not path.is_file():
            return None
    else:
        path = Path(arg)
        path = path / RESULTS_FILE if path.is_dir() else path
        if not path.is_file():
            raise DataError(
                f"--ablation {arg}: no {path}; evaluate the --no-disentangle run first "
                f"(fastdavs-eval {arg})"
            )
    try:
        results = json.loads(path.read_text())
        found = {k: results[k] for k in ("split", "lip_reading", "probes")}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable fastdavs-eval result ({e}); rerun it") from None
    if found["split"] != split:
        raise DataError(
            f"{path}: evaluated on split {found['split']!r}, this run on {split!r}; evaluate "
            f"both on the same split (--split)"
        )
    return {"eval": str(path), **found}


def _checkpoint(path: Path) -> Path:
    """The checkpoint directory `path` names: itself, or a run directory's latest (if none is
    intact, the run directory itself, whose loading then says what is wrong)."""
    if (path / CHECKPOINTS).is_dir():
        return latest_checkpoint(path) or path
    return path


def _trained_to(ckpt: Path) -> dict | None:
    """{"stage", "step"} of the trainer state saved with `ckpt` (verified by load_model)."""
    state = json.loads((ckpt / TRAINER).read_text())
    if isinstance(state, dict) and {"stage", "step"} <= state.keys():
        return {"stage": state["stage"], "step": state["step"]}
    return None


def _evaluate(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise FastdavsError(f"--batch-size {args.batch_size}: must be at least 1")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise FastdavsError(f"--device {device}: not a device (cpu, cuda, cuda:1...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise FastdavsError(f"--device {device}: CUDA is not available here; use --device cpu")
    ckpt = _checkpoint(Path(args.run_dir))
    model = load_model(ckpt)
    run = run_dir(ckpt)
    data = Path(args.data) if args.data else run_data(ckpt)
    out = Path(args.out) if args.out else (run or ckpt) / RESULTS_FILE
    check_writable(out)  # before the evaluation, not after it
    ablation = _ablation(args.ablation, run, args.split)  # likewise
    results = evaluate(model, data, split=args.split, batch_size=args.batch_size, device=device)
    results["checkpoint"] = str(ckpt)
    results["trained_to"] = _trained_to(ckpt)
    if ablation is not None and ablation["split"] != results["split"]:  # test fell back to val
        results["notes"].append(f"ablation {ablation['eval']} left out: another split")
        ablation = None
    results["ablation"] = ablation
    out = write_results(results, out)
    print(format_table(results))
    print(f"written: {out}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _evaluate, argv)
