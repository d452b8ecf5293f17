"""One experiment: train, reload the best-on-validation weights, evaluate, write the reports.

``python experiments/run.py`` and ``pyg-sdfl train`` both call :func:`main` (Hydra). A run holds
its folder's lock (:class:`~pyg_sdfl.engine.run_lock.RunLock`) from training to the last report.
Errors a user can act on (bad config values, unusable checkpoints, a diverged run, a locked folder)
end the command with one line on stderr and exit status 2, not a traceback.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs :func:`main`: they join one process group
(:mod:`pyg_sdfl.engine.distributed`), train one model together and score it together; rank 0 holds
the lock and writes every file, into its own Hydra run folder, which the other ranks adopt.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, NoReturn, Optional, Sequence, Union

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pyg_sdfl.config import KEY_TYPES, validate
from pyg_sdfl.data.dataset import denormalise_image
from pyg_sdfl.engine.builders import build_datasets, load_splits, resolve_device
from pyg_sdfl.engine.checkpoint import CheckpointError, LoadedModel, load_model
from pyg_sdfl.engine.distributed import (SINGLE_PROCESS, DistributedContext, available_cores, broadcast_object,
                                         from_environment, rank_device, thread_budget)
from pyg_sdfl.engine.evaluation import evaluate
from pyg_sdfl.engine.reporting import (metrics_table, plot_ced, plot_learning_curve, plot_prediction_grid, run_metadata,
                                      write_results)
from pyg_sdfl.engine.run_lock import RunFolderLocked, RunLock
from pyg_sdfl.engine.training import TrainingDiverged, train

log = logging.getLogger("pyg_sdfl")

_HYDRA_RECORDS = ("config.yaml", "hydra.yaml", "overrides.yaml")
# what a user can act on, reported as one line; anything else is a bug and keeps its traceback
_USER_ERRORS = (ValueError, OSError, CheckpointError, TrainingDiverged, RunFolderLocked)

__all__ = ["run_experiment", "evaluate_run", "main"]


def evaluate_run(cfg: DictConfig, checkpoint: Union[Path, LoadedModel], out_dir: Optional[Path] = None,
                 splits_to_score: Optional[list] = None,
                 context: DistributedContext = SINGLE_PROCESS) -> Dict[str, Any]:
    """Score a model on the configured splits and (optionally) write reports.

    ``checkpoint`` is a training checkpoint or exported file (loaded strictly with
    :func:`~pyg_sdfl.engine.checkpoint.load_model`) or an already loaded model. The model, its
    graph and scheme come from the file; the data, precision and metric settings from ``cfg``.
    ``splits_to_score`` (default: those of ``cfg.evaluate.splits`` the dataset has) names any of
    ``train`` (the training faces less the validation ones), ``val`` and ``test``; every split is
    scored on evaluation crops (no augmentation), and only the files those splits need are read
    (``test`` alone needs no training folder). In a multi-process run (``context``) the ranks share
    the faces and gather the predictions (every rank returns all metrics); give ``out_dir`` on rank 0 only.
    """
    validate(cfg)
    names = list(splits_to_score) if splits_to_score else list(cfg.evaluate.splits)
    problem = KEY_TYPES["evaluate.splits"].problem(names)
    if problem:
        raise ValueError(f"splits to score {names}: {problem}")
    device = rank_device(resolve_device(str(cfg.device)), context)
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint, device=device)
    model = loaded.model.to(device)
    splits = load_splits(cfg.dataset, need_test="test" in names,
                         need_train=bool({"train", "val"} & set(names)))
    if splits.scheme.name != loaded.scheme.name:
        raise CheckpointError(f"{loaded.path} was trained on scheme {loaded.scheme.name!r}; "
                              f"dataset {cfg.dataset.name!r} uses {splits.scheme.name!r}")
    datasets = build_datasets(cfg, splits, augment_train=False)
    if splits_to_score:
        missing = [name for name in names if name not in datasets]
        if missing:
            raise ValueError(f"dataset {cfg.dataset.name!r} has no {' or '.join(missing)} faces to score")
    else:
        names = [name for name in names if name in datasets]
    threshold = float(cfg.evaluate.threshold)
    metrics, curves = {}, {}
    for name in names:
        result = evaluate(model, datasets[name], splits.scheme, batch_size=int(cfg.evaluate.batch_size), device=device,
                          threshold=threshold, normalisation=str(cfg.evaluate.normalisation),
                          precision=str(cfg.train.precision), flip_test=bool(cfg.evaluate.flip_test),
                          annotation_offset_x=float(cfg.dataset.annotation_offset_x), context=context)
        metrics[name] = result["summary"]
        curves[name] = result["nme"]
        if out_dir is not None and int(cfg.evaluate.grid_faces) > 0:
            _write_grid(datasets[name], result, out_dir / f"predictions_{name}.png", int(cfg.evaluate.grid_faces))
    if out_dir is not None and curves:
        plot_ced(curves, out_dir / "ced.png", threshold=threshold)
    return {"metrics": metrics, "checkpoint_epoch": loaded.epoch,
            "nme_per_face": {k: v.tolist() for k, v in curves.items()}}


def _write_grid(dataset, result: Dict[str, Any], path: Path, count: int) -> None:
    preds = result["predictions"]
    count = min(count, len(preds.indices))
    order = np.arange(count)
    images = [denormalise_image(dataset[int(preds.indices[i])]["image"]) for i in order]
    targets = np.stack([dataset[int(preds.indices[i])]["landmarks"].numpy() for i in order])
    plot_prediction_grid(images, preds.pred_crop[order], targets, result["nme"][order], path)


def run_experiment(cfg: DictConfig, run_dir: Path, choices: Optional[Dict[str, Any]] = None,
                   records: Sequence[str] = (), context: DistributedContext = SINGLE_PROCESS) -> Dict[str, Any]:
    """Train, then evaluate ``best.ckpt`` on val and test; returns the results payload.

    ``choices`` (Hydra's config-group picks, e.g. ``{"head": "gat", "variant": "l1_loss"}``) are stored
    with the results so that aggregation can name each run's condition. The run holds ``run_dir``'s
    lock throughout; ``records`` are the files (relative to ``run_dir``) its launcher wrote before,
    kept safe from a refused second run (:class:`~pyg_sdfl.engine.run_lock.RunLock`). The results'
    ``meta.wall_time_s`` covers all parts of a resumed run. In a multi-process run (``context``) rank 0
    holds the lock and writes the reports; every rank returns the payload.
    """
    if not context.is_main:
        return _run(cfg, Path(run_dir), choices, context)
    with RunLock(run_dir, records=records):
        return _run(cfg, Path(run_dir), choices, context)


def _run(cfg: DictConfig, run_dir: Path, choices: Optional[Dict[str, Any]],
         context: DistributedContext = SINGLE_PROCESS) -> Dict[str, Any]:
    start = time.perf_counter()
    result = train(cfg, run_dir, context)
    evaluation = evaluate_run(cfg, run_dir / "best.ckpt", out_dir=run_dir if context.is_main else None,
                              context=context)
    if evaluation["checkpoint_epoch"] != result.best_epoch:  # never report one epoch's metrics as another's
        raise CheckpointError(f"{run_dir / 'best.ckpt'} holds epoch {evaluation['checkpoint_epoch']}, but the run's "
                              f"best epoch is {result.best_epoch}; its metrics would not be the best model's")
    payload = {
        "metrics": evaluation["metrics"],
        "best_epoch": result.best_epoch,
        "best_val_nme": result.best_val_nme,
        "untrained_val_nme": result.untrained_val_nme,
        "precision": result.precision,
        "history": result.history,
        "dataset": cfg.dataset.name,
        "normalisation": str(cfg.evaluate.normalisation),
        "crop": f"{cfg.dataset.crop_scale}x landmark box, {cfg.dataset.image_size}px",
        "nme_per_face": evaluation["nme_per_face"],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "choices": dict(choices or {}),
        "meta": {**run_metadata(result.wall_time_before_s + time.perf_counter() - start,
                                str(resolve_device(str(cfg.device)))),
                 "processes": context.world_size, "backend": context.backend or None},
    }
    if not context.is_main:
        return payload
    paths = write_results(run_dir, payload, threshold=float(cfg.evaluate.threshold))
    plot_learning_curve(result.history, run_dir / "learning_curve.png", result.untrained_val_nme, result.best_epoch)
    print(metrics_table(evaluation["metrics"], float(cfg.evaluate.threshold)))
    if result.untrained_val_nme is not None:
        print(f"validation NME: untrained {100 * result.untrained_val_nme:.2f}% -> trained {100 * result.best_val_nme:.2f}% "
              f"(epoch {result.best_epoch} of {result.epochs_run}, {result.precision}, {payload['meta']['wall_time_s']:.0f} s)")
    plots = ", ".join(str(run_dir / name) for name in ("learning_curve.png", "ced.png", "predictions_test.png")
                      if (run_dir / name).exists())
    print(f"results: {paths['json']}  table: {paths['markdown']}  plots: {plots}")
    return payload


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation NME (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = {k: v for k, v in OmegaConf.to_container(hydra_cfg.runtime.choices).items() if not k.startswith("hydra/")}
    subdir = hydra_cfg.output_subdir  # Hydra writes its records there before this function runs
    records = [f"{subdir}/{name}" for name in _HYDRA_RECORDS] if subdir else []
    context = SINGLE_PROCESS
    try:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and hydra_cfg.mode == RunMode.MULTIRUN:
            raise ValueError("torchrun with -m (a sweep): each job would join the same process group; run the sweep "
                             "on a launcher (hydra/launcher=joblib or sdfl_slurm) and torchrun single runs")
        context = from_environment(resolve_device(str(cfg.device)))
        _set_threads(cfg, hydra_cfg, context)
        if context.enabled:
            run_dir = _adopt_main_run_dir(run_dir, context)
        payload = run_experiment(cfg, run_dir, choices=choices, records=records, context=context)
    except _USER_ERRORS as err:
        _exit_with(err)
    finally:
        context.shutdown()
    return float(payload["best_val_nme"])


def _set_threads(cfg: DictConfig, hydra_cfg: Any, context: DistributedContext) -> None:
    """torch threads from ``cfg.threads`` (:func:`~pyg_sdfl.engine.distributed.thread_budget`): ``auto``
    shares the cores among a joblib launcher's parallel jobs and the run's processes on this machine."""
    jobs = 1
    if "joblib" in str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "").lower():
        n_jobs = int(OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=1) or 1)
        jobs = n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)  # joblib: -1 = all cores
    threads = thread_budget(cfg.get("threads", "auto"), parallel_jobs=jobs * context.local_world_size)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("torch threads: %d (threads=%s, %d parallel job(s) x %d process(es) on this machine)", threads,
                 cfg.get("threads", "auto"), jobs, context.local_world_size)


def _adopt_main_run_dir(own: Path, context: DistributedContext) -> Path:
    """Rank 0's Hydra run folder, for every rank; a rank whose Hydra made another folder (its clock
    showed another second) removes it when it holds nothing but Hydra's own records and log. Ranks
    other than 0 log warnings and errors only."""
    main_dir = Path(broadcast_object(context, str(own.resolve())))
    if not context.is_main:
        logging.getLogger("pyg_sdfl").setLevel(logging.WARNING)
        if own.resolve() != main_dir and own.is_dir():
            leftovers = [p for p in own.rglob("*") if p.is_file() and p.suffix not in (".yaml", ".log")]
            if not leftovers:
                shutil.rmtree(own, ignore_errors=True)
    return main_dir


def _exit_with(err: BaseException) -> NoReturn:
    """One line on stderr (also in the run's log), exit status 2."""
    message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    log.error("%s", message)
    print(f"pyg-sdfl train: error: {message}", file=sys.stderr)
    sys.exit(2)
