"""Training checkpoints: atomic, pickle-free (safetensors + JSON), verified before use.

Training writes them, `--resume`, eval, generate and export read them:

    RUN/checkpoints/
        latest                  the name of the newest complete checkpoint (one line)
        step_000123/
            model.safetensors   DavsModel state_dict (parameters, BatchNorm statistics)
            optim.safetensors   every tensor of the optimizer, scheduler and scaler states
            optim.json          the rest of those states; a tensor appears as {"__tensor__": key}
            rng.safetensors     torch CPU (and CUDA) generator states
            rng.json            numpy's and Python's global generator states
            trainer.json        the caller's training state (stage, step, epoch, data position...)
            config.json         DavsConfig, format version, versions, manifest; written last

A save writes into `.tmp-<name>-<random>/` and publishes it with `fastdavs.io.atomic.atomic_dir`
(every file and directory fsynced, the rename, the parent fsynced; re-saving a name swaps the two
trees in one step), then replaces `latest` durably. A crash (kill -9 included) at any point
leaves the earlier checkpoints complete and `latest` naming a complete one; leftover `.tmp-*`
entries and temporaries of `latest` are ignored by loads and removed by the next save. Loading
never unpickles:
the manifest's sizes and SHA-256 digests are checked before anything is read, and every
mismatch (damaged file, other config, other architecture, newer format) raises
`CheckpointError` naming the file and what differs.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fastdavs import __version__
from fastdavs.config import ConfigError, DavsConfig
from fastdavs.errors import CheckpointError, DataError
from fastdavs.io.atomic import atomic_dir, leftovers, write_text
from fastdavs.io.manifest import check_files, file_entry, read_config
from fastdavs.model import DavsModel

log = logging.getLogger(__name__)

FORMAT = "fastdavs-checkpoint"
FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"  # the folder of a run directory that holds its checkpoints
RUN_FILE = "run.json"  # how a run was made (the trainer writes it); its "data" is the shards read
LATEST = "latest"
TMP = ".tmp-"  # prefix of everything a save has not finished (or is deleting)
MODEL, OPTIM, OPTIM_JSON = "model.safetensors", "optim.safetensors", "optim.json"
RNG, RNG_JSON, TRAINER, CONFIG = "rng.safetensors", "rng.json", "trainer.json", "config.json"
PAYLOAD = (MODEL, OPTIM, OPTIM_JSON, RNG, RNG_JSON, TRAINER)  # the files config.json vouches for
DAMAGED = "the checkpoint was modified or damaged; use another one"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Optimizer states with one value per parameter element: each has its parameter's shape.
_ELEMENTWISE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


# ---- saving ---------------------------------------------------------------------------------
def save_checkpoint(
    run_dir: str | Path,
    step_name: str,
    model: DavsModel,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write `run_dir/checkpoints/<step_name>/` atomically and make it `latest`.

    Args:
        run_dir (str or Path): the run directory; `checkpoints/` is created in it.
        step_name (str): the checkpoint's directory name, e.g. ``f"step_{step:06d}"``. Saving a
            name that exists replaces that checkpoint.
        model (DavsModel): its state_dict and `cfg` are saved (unwrap DDP / torch.compile first).
        optimizers, schedulers (dict of name -> object, optional): any torch optimizers and LR
            schedulers; loading restores them by name.
        scaler (torch.amp.GradScaler, optional): its state, if given.
        trainer_state (dict, optional): JSON-serialisable training state, returned by the load.
        keep (int): complete checkpoints kept, this one included; older ones are deleted.

    Returns the checkpoint directory. Raises CheckpointError where the disk refuses a write (full,
    read-only); the checkpoints already there are then untouched. The global RNG states saved are
    those at the time of the call.
    """
    if not _NAME.fullmatch(step_name) or step_name == LATEST:
        raise ValueError(f"step_name={step_name!r}: use letters, digits, '_', '-', '.'")
    if keep < 1:
        raise ValueError(f"keep={keep}: must keep at least the checkpoint being written")
    # Serialise everything before touching the disk, so an unserialisable state fails here.
    optim_tensors: dict[str, torch.Tensor] = {}
    optim_meta = {
        kind: {
            name: {
                "class": type(obj).__name__,
                "state_dict": _flatten(obj.state_dict(), f"{kind}.{name}", optim_tensors),
            }
            for name, obj in (objects or {}).items()
        }
        for kind, objects in (("optimizers", optimizers), ("schedulers", schedulers))
    }
    optim_meta["scaler"] = (
        None if scaler is None else _flatten(scaler.state_dict(), "scaler", optim_tensors)
    )
    rng_tensors, rng_meta = _get_rng()
    contents: dict[str, bytes | dict[str, torch.Tensor]] = {
        MODEL: {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        OPTIM: optim_tensors,
        OPTIM_JSON: _json_bytes(optim_meta, "optimizer/scheduler/scaler state", indent=None),
        RNG: rng_tensors,
        RNG_JSON: _json_bytes(rng_meta, "RNG state", indent=None),
        TRAINER: _json_bytes(dict(trainer_state or {}), "trainer_state"),
    }

    ckpt_dir = Path(run_dir) / CHECKPOINTS
    final = ckpt_dir / step_name
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*ckpt_dir.glob(TMP + "*"), *leftovers(ckpt_dir / LATEST)]:
            log.info("removing %s, left by an interrupted save", stale)
            _remove(stale)
        serials = _complete(ckpt_dir)
        # Re-saving a name: the run resumed from an earlier checkpoint and reached it again.
        staging = f"{TMP}{step_name}-{secrets.token_hex(4)}"
        with atomic_dir(final, replace=True, staging=staging) as tmp:
            manifest = {}
            for name, content in contents.items():
                if isinstance(content, bytes):
                    (tmp / name).write_bytes(content)
                else:
                    _save_tensors(content, tmp / name)
                manifest[name] = file_entry(tmp / name)
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "step_name": step_name,
                "serial": 1 + max(serials.values(), default=0),  # save order, clock-independent
                "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "versions": {"fastdavs": __version__, "torch": torch.__version__},
                "config": model.cfg.to_dict(),
                "manifest": manifest,
            }
            (tmp / CONFIG).write_bytes(_json_bytes(meta, "config"))
        write_text(ckpt_dir / LATEST, step_name + "\n", fsync=True)
    except OSError as e:
        previous = _read_latest(ckpt_dir)
        raise CheckpointError(
            f"{final}: cannot save the checkpoint ({e.strerror or e}); "
            + (
                f"{ckpt_dir / previous} is still the latest one"
                if previous
                else "there is no earlier one"
            )
        ) from None
    older = sorted((n for n in serials if n != step_name), key=lambda n: (serials[n], n))
    for name in older[: max(0, len(older) - (keep - 1))]:
        log.info("pruning checkpoint %s (keep=%d)", ckpt_dir / name, keep)
        try:
            _remove(ckpt_dir / name)
        except OSError as e:  # the save itself succeeded; the next one tries again
            log.warning("cannot prune %s: %s", ckpt_dir / name, e)
    log.info("saved checkpoint %s", final)
    return final


def _flatten(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of a state_dict; tensors go to `tensors[key]` and leave a reference.

    Tuples and dicts with non-string keys (an optimizer's parameter indices) are tagged so
    that `_unflatten` gives back exactly what `state_dict()` returned.
    """
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"{key}: cannot store a {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of `_flatten`."""
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.keys() == {"__tensor__"}:
        return tensors[obj["__tensor__"]]
    if obj.keys() == {"__items__"}:
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    if obj.keys() == {"__tuple__"}:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    return {k: _unflatten(v, tensors) for k, v in obj.items()}


def _get_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """The global generator states: torch's as uint8 tensors, numpy's and Python's as JSON."""
    tensors = {"torch.cpu": torch.get_rng_state()}
    # Only when this process has used CUDA: asking earlier would initialise it for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch.cuda.{i}"] = state
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()  # MT19937: 624 uint32
    version, internal, gauss_next = random.getstate()
    python = {"version": version, "state": list(internal), "gauss_next": gauss_next}
    return tensors, {"numpy": np_state, "python": python}


def _json_bytes(obj: Any, what: str, indent: int | None = 2) -> bytes:
    try:
        return (json.dumps(obj, indent=indent) + "\n").encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} is not JSON-serialisable: {e}") from None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' `save_file`, with its I/O failures raised as OSError: it reports them as its
    own SafetensorError ("... I/O error: File too large (os error 27)"), which would otherwise
    escape the failed-save handling as a traceback."""
    try:
        save_file(tensors, path, metadata={"format": "pt"})
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise OSError(str(e)) from e
        raise OSError(int(code[1]), os.strerror(int(code[1]))) from e


def _read_latest(ckpt_dir: Path) -> str | None:
    """The name in `latest`, or None where it is missing or not a checkpoint name."""
    try:
        name = (ckpt_dir / LATEST).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _NAME.fullmatch(name) and name != LATEST else None


def _complete(ckpt_dir: Path) -> dict[str, int]:
    """name -> save serial of every directory whose config.json a save has finished writing.

    Contents are not verified here (`_verify` does that); this orders and prunes."""
    found = {}
    for child in ckpt_dir.iterdir():
        if child.name.startswith(".") or not (child / CONFIG).is_file():
            continue
        try:
            meta = json.loads((child / CONFIG).read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            serial = meta.get("serial")
            found[child.name] = serial if isinstance(serial, int) else 0
    return found


def _remove(path: Path) -> None:
    """Delete a checkpoint (or leftover) so that no half-deleted one keeps a final name."""
    if path.is_dir() and not path.name.startswith(TMP):
        doomed = path.with_name(f"{TMP}del-{path.name}-{secrets.token_hex(4)}")
        os.rename(path, doomed)
        path = doomed
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---- finding and verifying ------------------------------------------------------------------
def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume `run_dir` from, or None.

    The one named by `checkpoints/latest` if complete and intact, else the newest complete and
    intact one (robust to a missing or damaged `latest`). Damaged ones are skipped with a
    warning; every candidate's files are hashed.
    """
    found = _find_latest(Path(run_dir) / CHECKPOINTS, [])
    return found[0] if found else None


def run_dir(ckpt: Path) -> Path | None:
    """The run directory holding checkpoint `ckpt` (RUN/checkpoints/NAME), if it is in one."""
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else None


def run_data(ckpt: Path, option: str = "--data") -> Path:
    """The prepared shards the run holding checkpoint `ckpt` was trained on, from RUN/run.json.
    Raises DataError whose message ends with what to do: pass `option` DIR."""
    run = run_dir(ckpt)
    if run is None:
        raise DataError(f"{ckpt}: not inside a run directory; pass {option} DIR (prepared shards)")
    path = run / RUN_FILE
    try:
        data = json.loads(path.read_text()).get("data")
    except FileNotFoundError:
        raise DataError(
            f"{path}: missing, so the run's data is unknown; pass {option} DIR"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: unreadable ({e}); pass {option} DIR") from None
    if not isinstance(data, str) or not data:
        raise DataError(f'{path}: has no "data" entry; pass {option} DIR')
    return Path(data)


def _find_latest(ckpt_dir: Path, problems: list[str]) -> tuple[Path, dict] | None:
    if not ckpt_dir.is_dir():
        return None
    named = _read_latest(ckpt_dir)
    serials = _complete(ckpt_dir)
    by_age = sorted(serials, key=lambda n: (serials[n], n), reverse=True)
    for name in ([named] if named else []) + [n for n in by_age if n != named]:
        try:
            return ckpt_dir / name, _verify(ckpt_dir / name)
        except CheckpointError as e:
            log.warning("skipping a checkpoint: %s", e)
            problems.append(str(e))
    return None


def _verify(path: Path) -> dict:
    """Check a checkpoint directory's format and every file's size and SHA-256; return its
    config.json. Raises CheckpointError naming the first file that does not match."""
    cfg_file = path / CONFIG
    if not path.is_dir() or not cfg_file.is_file():
        raise CheckpointError(
            f"{path}: not a checkpoint directory (no {CONFIG}); pass a checkpoint such as "
            f"RUN/{CHECKPOINTS}/step_000100 or a run directory RUN"
        )
    meta = read_config(cfg_file, FORMAT, FORMAT_VERSION, "checkpoint", CheckpointError, DAMAGED)
    manifest = meta.get("manifest")
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{cfg_file}: has no manifest; {DAMAGED}")
    check_files(
        path, {name: manifest.get(name) for name in PAYLOAD}, cfg_file, CheckpointError, DAMAGED
    )
    return meta


def _resolve(path: str | Path) -> tuple[Path, dict]:
    """A checkpoint directory, or a run directory's latest checkpoint; verified."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / CHECKPOINTS).is_dir():
        problems: list[str] = []
        found = _find_latest(path / CHECKPOINTS, problems)
        if found is None:
            raise CheckpointError(
                f"{path / CHECKPOINTS}: no complete, intact checkpoint"
                + (f" ({'; '.join(problems)})" if problems else "")
            )
        return found
    return path, _verify(path)


def _config_of(path: Path, meta: dict) -> DavsConfig:
    data = meta.get("config")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path / CONFIG}: has no model config")
    try:
        return DavsConfig.from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG}: {e}") from None


def _config_diff(a: DavsConfig, b: DavsConfig) -> str:
    """'field: a != b; ...' over every (nested) field where the two configs differ."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return "; ".join(f"{k}: {fa.get(k)} != {fb.get(k)}" for k in fa | fb if fa.get(k) != fb.get(k))


# ---- loading --------------------------------------------------------------------------------
def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    expect_config: DavsConfig | None = None,
    restore_rng: bool = True,
) -> tuple[DavsConfig, dict]:
    """Verify a checkpoint and restore into the given objects; return (config, trainer_state).

    Args:
        path (str or Path): a checkpoint directory, or a run directory (its `latest_checkpoint`).
        model (nn.Module, optional): loaded with strict=True (every key, every shape).
        optimizers, schedulers (dict of name -> object, optional): restored by name; each name
            must be in the checkpoint with the same class (the checkpoint may hold more).
        scaler (torch.amp.GradScaler, optional): restored; the checkpoint must hold its state.
        expect_config (DavsConfig, optional): refuse a checkpoint whose config differs.
        restore_rng (bool): set torch's (CPU, CUDA), numpy's and Python's global generators to
            their saved states. (Default: True; pass False to only read the checkpoint.)

    Everything is read and checked before any object is changed, so a refused checkpoint
    (CheckpointError, naming the file and what differs) leaves the caller's objects as they were.
    Tensors are loaded on the CPU and copied into the model's and optimizers' devices.
    """
    ckpt, meta = _resolve(path)
    return _load(ckpt, meta, model, optimizers, schedulers, scaler, expect_config, restore_rng)


def load_model(path: str | Path) -> DavsModel:
    """A DavsModel built from a checkpoint's (or run directory's latest) config, weights loaded,
    in eval mode, on the CPU. Global RNG states are left alone."""
    ckpt, meta = _resolve(path)
    model = DavsModel(_config_of(ckpt, meta))
    _load(ckpt, meta, model, None, None, None, None, restore_rng=False, built_from_checkpoint=True)
    return model.eval()


def _load(
    ckpt: Path,
    meta: dict,
    model: nn.Module | None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None,
    schedulers: Mapping[str, Any] | None,
    scaler: torch.amp.GradScaler | None,
    expect_config: DavsConfig | None,
    restore_rng: bool,
    built_from_checkpoint: bool = False,
) -> tuple[DavsConfig, dict]:
    cfg = _config_of(ckpt, meta)
    if expect_config is not None and (diff := _config_diff(cfg, expect_config)):
        raise CheckpointError(
            f"{ckpt / CONFIG}: the checkpoint's config differs from the expected one "
            f"(checkpoint != expected): {diff}"
        )
    trainer_state = json.loads((ckpt / TRAINER).read_bytes())
    steps: list[Callable[[], Any]] = []  # applied only once everything has been checked
    if model is not None:
        weights = load_file(ckpt / MODEL)
        _check_model(model, weights, ckpt / MODEL, cfg, built_from_checkpoint)
        steps.append(partial(model.load_state_dict, weights, strict=True))
    if optimizers or schedulers or scaler is not None:
        saved = _unflatten(json.loads((ckpt / OPTIM_JSON).read_bytes()), load_file(ckpt / OPTIM))
        where = ckpt / OPTIM_JSON
        for kind, objects in (("optimizers", optimizers), ("schedulers", schedulers)):
            for name, obj in (objects or {}).items():
                entry = saved[kind].get(name)
                what = f"{kind[:-1]} {name!r}"
                if entry is None:
                    have = ", ".join(map(repr, saved[kind])) or "none"
                    raise CheckpointError(f"{where}: no {what} (the checkpoint has: {have})")
                if entry["class"] != type(obj).__name__:
                    raise CheckpointError(
                        f"{where}: {what} is {entry['class']} in the checkpoint, "
                        f"{type(obj).__name__} here"
                    )
                if kind == "optimizers":
                    _check_optimizer(obj, entry["state_dict"], f"{where}: {what}")
                steps.append(partial(obj.load_state_dict, entry["state_dict"]))
        if scaler is not None:
            if saved["scaler"] is None:
                raise CheckpointError(f"{where}: the checkpoint was saved without a GradScaler")
            if scaler.is_enabled() and not saved["scaler"]:
                raise CheckpointError(f"{where}: the checkpoint's GradScaler was disabled")
            steps.append(partial(scaler.load_state_dict, saved["scaler"]))
    if restore_rng:
        rng = load_file(ckpt / RNG), json.loads((ckpt / RNG_JSON).read_bytes())
        steps.append(partial(_set_rng, *rng))
    for step in steps:
        step()
    log.info("loaded checkpoint %s", ckpt)
    return cfg, trainer_state


def _listing(items: list[str], limit: int = 5) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _check_model(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    file: Path,
    cfg: DavsConfig,
    built_from_checkpoint: bool = False,
) -> None:
    """One CheckpointError for every key or shape that `load_state_dict(strict=True)` refuses.
    `built_from_checkpoint`: the model was built from the checkpoint's own config."""
    expected = model.state_dict()
    shapes = [
        f"{k} has shape {list(weights[k].shape)} but the model expects {list(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    problems = [_listing(shapes)] if shapes else []
    if missing:
        problems.append(f"the model's {_listing(missing)} not in the checkpoint")
    if unexpected:
        problems.append(f"the checkpoint's {_listing(unexpected)} not in the model")
    if problems:
        model_cfg = getattr(model, "cfg", None)
        diff = _config_diff(model_cfg, cfg) if isinstance(model_cfg, DavsConfig) else ""
        hint = f" (model config != checkpoint config: {diff})" if diff else ""
        if built_from_checkpoint:  # the saved config and weights disagree with each other
            hint = (
                f" (the weights do not fit the {cfg.preset!r} config in {file.parent / CONFIG}: "
                f"one of the two was edited or replaced; {DAMAGED})"
            )
        raise CheckpointError(f"{file}: " + "; ".join(problems) + hint)


def _check_optimizer(opt: torch.optim.Optimizer, state_dict: dict, what: str) -> None:
    """Refuse a saved state whose groups or per-element states do not fit the optimizer's
    parameters (torch would load mismatched shapes and fail at the next step)."""
    saved_groups, groups = state_dict["param_groups"], opt.param_groups
    sizes, here = [len(g["params"]) for g in saved_groups], [len(g["params"]) for g in groups]
    if sizes != here:
        raise CheckpointError(
            f"{what} has parameter groups of {sizes} parameters in the checkpoint, {here} here"
        )
    saved_ids = chain.from_iterable(g["params"] for g in saved_groups)
    params = chain.from_iterable(g["params"] for g in groups)
    for i, (saved_id, p) in enumerate(zip(saved_ids, params, strict=True)):
        for key, value in state_dict["state"].get(saved_id, {}).items():
            if key in _ELEMENTWISE and value.shape != p.shape:
                raise CheckpointError(
                    f"{what}: {key} of parameter {i} has shape {list(value.shape)} but the "
                    f"parameter has {list(p.shape)} (parameters passed in another order?)"
                )


def _set_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch.cpu"])
    cuda = [tensors[f"torch.cuda.{i}"] for i in range(len(tensors) - 1)]
    if cuda and not torch.cuda.is_available():
        log.warning("the checkpoint holds CUDA RNG states but CUDA is not available here")
    elif cuda:
        if len(cuda) != torch.cuda.device_count():
            log.warning(
                "the checkpoint holds %d CUDA RNG states, this machine has %d GPUs",
                len(cuda),
                torch.cuda.device_count(),
            )
        for i, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)
    np_state = meta["numpy"]
    key = np.asarray(np_state["state"]["key"], np.uint32)
    np.random.set_state({**np_state, "state": {**np_state["state"], "key": key}})
    python = meta["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
