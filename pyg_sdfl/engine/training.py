"""The training loop: one run = mine the graph, train, keep the best-on-validation checkpoint.

Checkpoints are written at the end of every epoch (``last.ckpt``) and when validation NME
improves (``best.ckpt``). ``train.resume`` continues a run from ``last.ckpt`` with the same
model, optimiser, scheduler and RNG states; shuffling and augmentation are seeded per epoch,
so an interrupted-and-resumed run follows the same trajectory as an uninterrupted one.

Faults it guards against:

- a kill while a checkpoint is written: writes are atomic (temporary file, then rename); ``last.ckpt``
  is written before ``best.ckpt`` from the same state, so after a kill between the two, resume
  rewrites ``best.ckpt`` from ``last.ckpt`` (whose weights are the best epoch's). Resume removes the
  temporary files a killed write left behind and never continues with a ``best.ckpt`` that does not
  hold the epoch its ``best`` record names. ``wall_time_s`` adds up all parts of a resumed run.
- divergence: a non-finite loss, non-finite validation predictions, or a validation NME above
  ``train.max_val_nme`` stop the run with :class:`TrainingDiverged` before that epoch's checkpoints
  are written, so ``last.ckpt``/``best.ckpt`` keep the last good state.

Several processes (``torchrun``, :mod:`pyg_sdfl.engine.distributed`): the model is wrapped in
``DistributedDataParallel``; ``train.batch_size`` stays the global batch, each rank training on its
slice of every global batch (:mod:`pyg_sdfl.engine.sampling`: the same faces per step as one process,
pose-balanced draws included); ``train.sync_batchnorm`` normalises over the global batch
(:mod:`pyg_sdfl.nn.cross_process_batch_norm`; without it each rank normalises its own slice and rank
0's running statistics are kept, as DDP does). Validation is gathered over all ranks; rank 0 alone
writes checkpoints and the graph; a resume reads ``last.ckpt`` on every rank.
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pyg_sdfl.config import validate
from pyg_sdfl.data.balance import pose_balanced_weights
from pyg_sdfl.data.device_crops import DeviceCropLoader, ImageBank
from pyg_sdfl.engine.builders import (
    build_datasets,
    build_graph,
    build_loss,
    build_model,
    load_splits,
    normalised_shapes,
    resolve_device,
)
from pyg_sdfl.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    float_state,
    load_checkpoint,
    load_state_dict_strict,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from pyg_sdfl.engine.distributed import (SINGLE_PROCESS, DistributedContext, all_reduce_sum, broadcast_object,
                                         rank_device)
from pyg_sdfl.engine.evaluation import cpu_bf16_flags, precision_autocast, predict, resolve_precision
from pyg_sdfl.engine.distillation import Teacher, checked_weight, distillation_loss, load_teacher
from pyg_sdfl.engine.fine_tuning import backbone_frozen, parameter_groups, set_backbone_trainable
from pyg_sdfl.engine.sampling import GlobalBatchShards, epoch_generator, epoch_order
from pyg_sdfl.engine.size_transfer import transfer_map_weights
from pyg_sdfl.graph import LandmarkGraph
from pyg_sdfl.metrics import nme as per_face_nme
from pyg_sdfl.metrics import summarize
from pyg_sdfl.nn.cross_process_batch_norm import convert_batch_norm
from pyg_sdfl.nn.heads import GRAPH_BACKENDS, use_graph_backend

log = logging.getLogger(__name__)

__all__ = ["TRAIN_CROPS", "TrainResult", "TrainingDiverged", "train", "seed_everything", "check_compatible"]

#: ``train.crops``: where training crops are resampled (the DataLoader's OpenCV workers, or the training device)
TRAIN_CROPS = ("loader", "device")


class TrainingDiverged(FloatingPointError):
    """Training blew up (non-finite loss or validation predictions, or an absurd validation NME).

    Raised before that epoch's checkpoints are written; the message names the cause and the remedy.
    """


@dataclass
class TrainResult:
    """Summary of a run.

    ``wall_time_s`` is the training time of all parts of the run (a resumed run adds the time its
    earlier parts recorded in their checkpoints); ``wall_time_before_s`` is that earlier part
    (0 for a run in one part).
    """

    run_dir: Path
    best_epoch: int
    best_val_nme: float
    epochs_run: int
    wall_time_s: float
    history: List[Dict[str, float]] = field(default_factory=list)
    wall_time_before_s: float = 0.0
    untrained_val_nme: Optional[float] = None  # the validation NME before the first step (train.eval_untrained)
    precision: str = "fp32"  # the precision the run used (train.precision with "auto" resolved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_compatible(state: Dict[str, Any], scheme_name: str, graph: LandmarkGraph, where: str) -> None:
    """Refuse a checkpoint whose scheme or graph differs from the configured ones."""
    if state.get("scheme") != scheme_name:
        raise CheckpointError(
            f"{where}: the checkpoint was trained on scheme {state.get('scheme')!r} but the config uses {scheme_name!r}"
        )
    saved = LandmarkGraph.from_dict(state["graph"])
    if saved.num_nodes != graph.num_nodes or not torch.equal(saved.edge_index.cpu(), graph.edge_index.cpu()):
        raise CheckpointError(
            f"{where}: the checkpoint's landmark graph (k={saved.k}, mode={saved.mode}) differs from the "
            f"configured one (k={graph.k}, mode={graph.mode}); set graph.* as in the checkpoint's config"
        )


def _require_init_file(key: str, path: Path, hint: str) -> None:
    """One line naming the config key when the file a run starts from is missing: ``KEY=PATH: no such file (HINT)``."""
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: no such file ({hint})")


def _initialise_from(model: nn.Module, path: Path, scheme_name: str, graph: LandmarkGraph) -> None:
    """Fine-tuning: the weights of ``path`` (a training checkpoint or an exported file), loaded strictly
    into ``model``; the optimiser, schedule and epoch count start fresh (unlike ``train.resume``).

    A file trained at another ``dataset.image_size`` (same backbone and head) is fine-tuned at this one:
    the head's map-reading weights are resampled to this feature-map size
    (:func:`~pyg_sdfl.engine.size_transfer.transfer_map_weights`), and the log names them."""
    _require_init_file("train.init_from", path, f"a relative path is read from the working folder, {Path.cwd()}; "
                                                "a preset that starts from a file says in its YAML how to make it")
    ckpt = load_checkpoint(path, map_location="cpu")
    check_compatible(ckpt, scheme_name, graph, f"train.init_from={path}")
    state = float_state(ckpt["model"])
    trained_size = ((ckpt.get("config") or {}).get("dataset") or {}).get("image_size")
    feature_size = getattr(model.head, "feature_size", None)  # every built-in head has it; else a strict load
    if trained_size is not None and int(trained_size) != model.image_size and feature_size is not None:
        stride = model.image_size // int(feature_size[0])
        old, new = (int(trained_size) // stride,) * 2, tuple(int(v) for v in feature_size)
        state, resampled = transfer_map_weights(model.state_dict(), state, old, new)
        log.info("train.init_from: %s was trained on %d px crops (%dx%d map), this run uses %d px (%dx%d): "
                 "%s resampled as the adjoint of area pooling", path, int(trained_size), *old, model.image_size,
                 *new, ", ".join(resampled) or "no weight")
    load_state_dict_strict(model, state, what=f"train.init_from={path}")
    log.info("weights initialised from %s (epoch %s of that run); optimiser and schedule start fresh", path,
             ckpt.get("epoch", (ckpt.get("meta") or {}).get("epoch")))


def _initialise_backbone_from(model: nn.Module, path: Path) -> None:
    """The backbone's weights from ``path`` (a training checkpoint or an exported file, whatever its head),
    loaded strictly into ``model.backbone``; the head, optimiser and schedule start fresh."""
    _require_init_file("train.init_backbone_from", path, "the comparison presets start from the backbone that "
                       "`python experiments/run.py experiment=backbone_pretrain` writes")
    ckpt = load_checkpoint(path, map_location="cpu")
    state = {k[len("backbone."):]: v for k, v in float_state(ckpt["model"]).items() if k.startswith("backbone.")}
    if not state:
        raise CheckpointError(f"train.init_backbone_from={path}: the file's model has no backbone weights")
    load_state_dict_strict(model.backbone, state, what=f"backbone (train.init_backbone_from={path})")
    log.info("backbone initialised from %s (%d tensors); the head starts fresh", path, len(state))


def _resolve_resume(setting: Any, run_dir: Path) -> Optional[str]:
    """``train.resume``: ``"last"`` or a path as given; ``"auto"`` is ``"last"`` when ``run_dir/last.ckpt``
    exists and nothing (a fresh run) otherwise: a sweep re-launched after an interruption, or a job a
    cluster re-queues, continues what was there (a finished run only scores its best model again)."""
    if setting is None or str(setting) == "":
        return None
    if str(setting) == "auto":
        found = (run_dir / "last.ckpt").is_file()
        log.info("train.resume=auto: %s", f"resuming from {run_dir / 'last.ckpt'}" if found
                 else f"no last.ckpt in {run_dir}, a fresh run")
        return "last" if found else None
    return str(setting)


#: settings a resumed run may change: where things are, how it logs and runs, and how long it goes on
RESUMABLE_CHANGES = ("train.resume", "train.epochs", "train.val_every", "train.log_every", "train.num_workers",
                     "train.crops",
                     "train.eval_untrained", "train.max_val_nme", "train.init_from", "train.init_backbone_from",
                     "threads", "device", "dataset.root", "dataset.train.root", "dataset.test.root", "evaluate.")


def _check_same_protocol(saved: Dict[str, Any], cfg: DictConfig, path: Path, refuse: bool) -> None:
    """A resumed run continues the saved run's training: a config that differs from the checkpoint's in
    anything but :data:`RESUMABLE_CHANGES` is refused with ``refuse`` (``train.resume=auto``, which
    a sweep re-launched over old folders would otherwise continue under another protocol) and
    warned about otherwise; the message names the keys."""
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    before = _flat(saved) if saved else {}
    changed = sorted(k for k in set(now) | set(before)
                     if not k.startswith(RESUMABLE_CHANGES) and k in before and now.get(k) != before.get(k))
    if not changed or not before:
        return
    shown = "; ".join(f"{k}={before.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
    more = f" ({len(changed)} keys in all)" if len(changed) > 8 else ""
    if refuse:
        raise CheckpointError(f"train.resume=auto: {path} was trained with another config: {shown}{more}; start a "
                              f"new run folder, or continue it anyway with train.resume=last")
    log.warning("resuming %s with a config that differs from its own: %s%s", path, shown, more)


def _flat(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


def _make_loader(dataset, cfg: DictConfig, epoch: int, sampler_weights: Optional[np.ndarray],
                 context: DistributedContext = SINGLE_PROCESS, device_type: str = "cpu",
                 bank: Optional[ImageBank] = None) -> Iterable[Dict[str, Any]]:
    """The epoch's loader: rank ``context.rank``'s slice of each global batch of ``train.batch_size``
    (:mod:`pyg_sdfl.engine.sampling`; one process: the whole batches, as a shuffling DataLoader draws them).
    With ``bank`` (``train.crops=device``) the same batches are resampled on the training device
    (:class:`~pyg_sdfl.data.device_crops.DeviceCropLoader`), else by a DataLoader's workers."""
    batch_size = int(cfg.train.batch_size)
    order = epoch_order(len(dataset), int(cfg.seed), epoch, sampler_weights)
    batches = GlobalBatchShards(order, batch_size, context.world_size, context.rank,
                                drop_last=len(dataset) >= batch_size)
    if bank is not None:
        return DeviceCropLoader(bank, batches, channels_last=bool(cfg.train.channels_last))
    return DataLoader(
        dataset,
        batch_sampler=batches,
        generator=epoch_generator(int(cfg.seed), epoch),  # seeds the workers as before; the order is drawn above
        num_workers=int(cfg.train.num_workers),
        pin_memory=device_type == "cuda",
        persistent_workers=False,
    )


def train(cfg: DictConfig, run_dir: str | Path, context: DistributedContext = SINGLE_PROCESS) -> TrainResult:
    """Train the configured model; returns the best-on-validation summary.

    Writes ``last.ckpt``, ``best.ckpt`` and ``graph.pt`` into ``run_dir`` (rank 0 of a multi-process
    ``context``; every rank returns the same summary). The config is checked first
    (:func:`pyg_sdfl.config.validate`): a value of the wrong type stops before anything is built.
    """
    validate(cfg)
    epochs = int(cfg.train.epochs)
    if epochs < 1:
        raise ValueError(f"train.epochs={cfg.train.epochs}: a run needs at least one epoch; "
                         f"set train.epochs to 1 or more")
    freeze_epochs = _check_freeze(cfg, context)
    _check_distill(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seed_everything(int(cfg.seed))
    device = rank_device(resolve_device(str(cfg.device)), context)
    main = context.is_main

    splits = load_splits(cfg.dataset)
    if not splits.val:
        raise ValueError("the validation split is empty: raise dataset.val_fraction (model selection needs it)")
    log.info("data: %d train, %d val, %d test faces (%s)", len(splits.train), len(splits.val), len(splits.test), cfg.dataset.name)
    graph = build_graph(cfg.graph, splits, crop_scale=float(cfg.dataset.crop_scale), seed=int(cfg.seed))
    if context.enabled:  # one graph for all ranks, whatever the mining's floating-point luck
        graph = LandmarkGraph.from_dict(broadcast_object(context, graph.to_dict()))
    if main:
        graph.save(run_dir / "graph.pt")
    teacher = _load_teacher(cfg, splits.scheme.name, device)
    datasets = build_datasets(cfg, splits, teacher_size=teacher.image_size if teacher else None)
    # train.crops=device: the training faces packed on the training device once (validate() checked the choice)
    bank = ImageBank(datasets["train"], device, announce=main) if cfg.train.crops == "device" else None
    model = build_model(cfg, graph, splits.scheme.num_points).to(device)
    _use_graph_backend(model, str(cfg.train.graph_backend))
    # rank 0 decides for all: ranks on other machines may see the folder late
    resume = broadcast_object(context, _resolve_resume(cfg.train.resume, run_dir) if main else None)
    if cfg.train.init_from and cfg.train.init_backbone_from:
        raise ValueError(f"train.init_from={cfg.train.init_from} and train.init_backbone_from="
                         f"{cfg.train.init_backbone_from}: give one (init_from takes the whole model)")
    if cfg.train.init_from and not resume:
        _initialise_from(model, Path(str(cfg.train.init_from)), splits.scheme.name, graph)
    if cfg.train.init_backbone_from and not resume:
        _initialise_backbone_from(model, Path(str(cfg.train.init_backbone_from)))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if context.enabled and cfg.train.sync_batchnorm:
        model = convert_batch_norm(model, device.type)
    criterion = build_loss(cfg.loss, graph).to(device)
    optimizer = instantiate(cfg.train.optimizer)(
        params=parameter_groups(model, float(cfg.train.backbone_lr_scale), float(cfg.train.optimizer.lr)))
    scheduler = instantiate(cfg.train.scheduler)(optimizer=optimizer)
    weights = pose_balanced_weights(normalised_shapes(splits.train)) if cfg.train.balance else None
    if context.enabled and weights is not None:  # one draw for all ranks, whatever their BLAS does at a bin edge
        weights = broadcast_object(context, weights)

    state = {"epoch": 0, "best_epoch": -1, "best_val_nme": math.inf, "history": [], "untrained_val_nme": None}
    before = 0.0  # training time of the earlier parts of a resumed run
    if resume:
        path = run_dir / "last.ckpt" if str(resume) == "last" else Path(str(resume))
        if main:
            stale = remove_stale_temporaries(run_dir)
            if stale:
                log.warning("removed %d temporary checkpoint file(s) left by a killed write: %s", len(stale),
                            ", ".join(p.name for p in stale))
        context.barrier()  # no rank reads while rank 0 tidies
        # on the CPU: the RNG states must stay there (a CUDA run failed to resume with map_location=cuda);
        # load_state_dict moves the weights and the optimiser state to the parameters' device
        ckpt = load_checkpoint(path, map_location="cpu")
        check_compatible(ckpt, splits.scheme.name, graph, f"resume from {path}")
        _check_same_protocol(ckpt.get("config") or {}, cfg, path, refuse=str(cfg.train.resume) == "auto")
        _check_backbone_lr_scale(ckpt.get("config") or {}, cfg, path)
        load_state_dict_strict(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng_state(ckpt["rng"])
        if main:
            _ensure_best_checkpoint(ckpt, path, run_dir)
        state.update(epoch=ckpt["epoch"], best_epoch=ckpt["best"]["epoch"], best_val_nme=ckpt["best"]["val_nme"],
                     history=list(ckpt.get("history", [])), untrained_val_nme=ckpt.get("untrained_val_nme"))
        before = float((ckpt.get("meta") or {}).get("wall_time_s", 0.0))
        log.info("resumed from %s at epoch %d (%.1f s of training before)", path, state["epoch"], before)

    net = model
    if context.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_fn = torch.compile(net) if cfg.train.compile else net
    precision = resolve_precision(str(cfg.train.precision), device)
    if str(cfg.train.precision) == "auto":
        log.info("precision: auto -> %s (%s)", precision,
                 f"device {device}" if device.type != "cpu" else f"CPU bf16 features: {cpu_bf16_flags() or 'none'}")
    if not resume and cfg.train.eval_untrained:
        rng = capture_rng_state()  # put back afterwards: the run trains exactly as it would without this
        state["untrained_val_nme"] = float(_validate(model, datasets["val"], splits.scheme, cfg, device, precision,
                                                     context)["nme"])
        restore_rng_state(rng)
        log.info("epoch 0 (untrained): val NME %.4f%%", 100 * state["untrained_val_nme"])
    max_val_nme = float(cfg.train.max_val_nme)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    for epoch in range(state["epoch"], epochs):
        datasets["train"].set_epoch(epoch)
        loader = _make_loader(datasets["train"], cfg, epoch, weights, context, device.type, bank)
        frozen = backbone_frozen(epoch, freeze_epochs)
        if freeze_epochs:
            set_backbone_trainable(model, not frozen)
            if epoch in (state["epoch"], freeze_epochs):
                log.info("epoch %d: the backbone is %s", epoch + 1, f"frozen (until epoch {freeze_epochs}, "
                         f"train.freeze_backbone_epochs)" if frozen else "trained")
        stats = _train_one_epoch(step_fn, criterion, optimizer, loader, device, epoch, epochs, cfg, precision,
                                 context, model.backbone if frozen else None, teacher)
        scheduler.step()
        record = {"epoch": epoch + 1, **stats}
        if (epoch + 1) % int(cfg.train.val_every) == 0 or epoch + 1 == epochs:
            nonfinite = _diverged(epoch + 1, "validation predictions are NaN or infinite", cfg, stats["lr"])
            val = _validate(model, datasets["val"], splits.scheme, cfg, device, precision, context, nonfinite)
            if not val["nme"] <= max_val_nme:
                raise _diverged(epoch + 1, f"validation NME {100 * val['nme']:.4g}% is above train.max_val_nme="
                                          f"{cfg.train.max_val_nme} ({100 * max_val_nme:g}%)", cfg, stats["lr"])
            record.update(val_nme=float(val["nme"]), val_fr=float(val["fr"]), val_auc=float(val["auc"]))
            improved = val["nme"] < state["best_val_nme"]
            if improved:
                state["best_val_nme"], state["best_epoch"] = float(val["nme"]), epoch + 1
            log.info("epoch %d/%d: loss %.4f  val NME %.4f%%  FR %.2f%%%s", epoch + 1, epochs, stats["loss"],
                     100 * val["nme"], 100 * val["fr"], "  (best)" if improved else "")
        else:
            improved = False
        state["history"].append(record)
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1,
            "best": {"epoch": state["best_epoch"], "val_nme": state["best_val_nme"]},
            "rng": capture_rng_state(),
            "graph": graph.to_dict(),
            "scheme": splits.scheme.name,
            "config": config_dict,
            "history": state["history"],
            "untrained_val_nme": state["untrained_val_nme"],
            "meta": {"wall_time_s": before + time.perf_counter() - start, "device": str(device)},
        }
        if main:
            save_checkpoint(checkpoint, run_dir / "last.ckpt")
            if improved:
                save_checkpoint(checkpoint, run_dir / "best.ckpt")

    context.barrier()  # the checkpoints are written before any rank reads them

    return TrainResult(run_dir=run_dir, best_epoch=state["best_epoch"], best_val_nme=state["best_val_nme"],
                       epochs_run=len(state["history"]), wall_time_s=before + time.perf_counter() - start,
                       history=state["history"], wall_time_before_s=before,
                       untrained_val_nme=state["untrained_val_nme"], precision=precision)


def _validate(model: nn.Module, dataset: Any, scheme: Any, cfg: DictConfig, device: torch.device,
              precision: str, context: DistributedContext = SINGLE_PROCESS,
              nonfinite: Optional[Exception] = None) -> Dict[str, float]:
    """NME, FR and AUC of ``model`` on the validation set (all of it, gathered over the ranks), with the
    run's evaluation settings; ``nonfinite`` is raised (on every rank: the check reads the gathered
    predictions) when a prediction is NaN or infinite."""
    preds = predict(model, dataset, batch_size=int(cfg.evaluate.batch_size), device=device, precision=precision,
                    context=context)
    if not np.isfinite(preds.pred).all():
        raise nonfinite if nonfinite is not None else ValueError("validation predictions are NaN or infinite")
    errors = per_face_nme(preds.pred, preds.target, scheme, mode=str(cfg.evaluate.normalisation))
    return summarize(errors, preds.subsets, threshold=float(cfg.evaluate.threshold))["all"]


def _diverged(epoch: int, cause: str, cfg: DictConfig, lr: float) -> TrainingDiverged:
    """The one-line error for a run that blew up at ``epoch`` (1-based, run at learning rate ``lr``):
    cause, remedy, and what is kept."""
    configured = cfg.train.optimizer.lr
    ran_at = "" if float(configured) == float(lr) else f", {lr:g} in this epoch"
    kept = f"last.ckpt keeps epoch {epoch - 1}, the last good state" if epoch > 1 else "no checkpoint was written"
    return TrainingDiverged(f"training diverged at epoch {epoch}: {cause}; lower the learning rate "
                            f"(train.optimizer.lr={configured}{ran_at}); {kept}")


def _ensure_best_checkpoint(last: Dict[str, Any], last_path: Path, run_dir: Path) -> None:
    """Make ``run_dir/best.ckpt`` hold the weights that ``last``'s ``best`` record names, or refuse.

    ``last.ckpt`` is written before ``best.ckpt`` from the same state, so a kill between the two
    writes leaves ``last`` recording best epoch ``E`` with its own weights being epoch ``E``'s, while
    ``best.ckpt`` still holds an earlier epoch (or is absent): ``best.ckpt`` is then rewritten from
    ``last``. A ``best.ckpt`` next to ``last_path`` (resuming another folder's run) is the other
    source. Without a source holding the recorded epoch, a :class:`CheckpointError` says so: the
    run would otherwise report one epoch's metrics with another epoch's weights.
    """
    record = last.get("best") or {}
    if int(record.get("epoch", -1)) < 1:  # no validation yet: the first one writes best.ckpt
        return
    target = run_dir / "best.ckpt"

    def holds_record(state: Optional[Dict[str, Any]]) -> bool:
        return state is not None and state.get("epoch") == record["epoch"] and state.get("best") == record

    found = _read_if_usable(target)
    if holds_record(found):
        return
    sources: List[Tuple[Path, Optional[Dict[str, Any]]]] = [(last_path, last)]
    if last_path.parent.resolve() != run_dir.resolve():
        sources.append((last_path.parent / "best.ckpt", _read_if_usable(last_path.parent / "best.ckpt")))
    for source_path, source in sources:
        if holds_record(source):
            save_checkpoint(source, target)
            log.warning("best.ckpt held %s but %s records best %s (a run killed while writing best.ckpt?): "
                        "rewrote best.ckpt from %s, which holds it", _describe(found), last_path.name,
                        _describe(source), source_path)
            return
    raise CheckpointError(f"cannot resume from {last_path}: it records best {_describe(last)} but {target} holds "
                          f"{_describe(found)} and no checkpoint with those weights is left; start a new run in a "
                          f"new folder")


def _read_if_usable(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path)
    except CheckpointError:
        return None


def _describe(state: Optional[Dict[str, Any]]) -> str:
    """``"epoch 3 (val NME 12.34%)"``: the best record of a checkpoint's state."""
    if state is None:
        return "nothing readable"
    best = state.get("best") or {}
    return f"epoch {best.get('epoch')} (val NME {100 * float(best.get('val_nme', math.nan)):.4g}%)"


def _use_graph_backend(model: nn.Module, backend: str) -> None:
    """``train.graph_backend``: run the model's SDFL heads on ``backend`` (the same weights and
    gradients; ``tests/engine/test_training.py`` trains both and compares)."""
    if backend not in GRAPH_BACKENDS:
        raise ValueError(f"train.graph_backend must be one of {GRAPH_BACKENDS}; got {backend!r}")
    heads = use_graph_backend(model, backend)
    if backend != "pyg":
        if heads:
            log.info("train.graph_backend=%s: %d SDFL head(s) on the %s path", backend, heads, backend)
        else:
            log.warning("train.graph_backend=%s has no effect: the model has no SDFL head", backend)


def _on_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def _check_distill(cfg: DictConfig) -> None:
    """``train.distill`` checked before anything is built: a weight in [0, 1], and the loader's crops (the
    device crop loader cuts one view per face; the teacher needs its own at its crop size)."""
    checked_weight(cfg.train.distill.weight)
    if cfg.train.distill.teacher and cfg.train.crops == "device":
        raise ValueError(f"train.distill.teacher={cfg.train.distill.teacher} needs train.crops=loader: the device "
                         f"crop loader cuts one view per face, the teacher needs its own at its crop size")


def _check_backbone_lr_scale(saved: Dict[str, Any], cfg: DictConfig, path: Path) -> None:
    """A resumed run keeps its optimiser groups: refuse a changed ``train.backbone_lr_scale`` (the saved
    groups' lrs would win, or the group count would not match) with what to do instead."""
    before = float(_flat(saved).get("train.backbone_lr_scale", 1.0)) if saved else float(cfg.train.backbone_lr_scale)
    if before != float(cfg.train.backbone_lr_scale):
        raise CheckpointError(f"resume from {path}: it was trained with train.backbone_lr_scale={before}, the config "
                              f"says {cfg.train.backbone_lr_scale}; the optimiser's groups are part of the run, so "
                              f"resume with {before}, or start a new run from its weights with train.init_from")


def _check_freeze(cfg: DictConfig, context: DistributedContext) -> int:
    """``train.freeze_backbone_epochs``, checked: not under torchrun (DDP fixes the set of trained parameters
    when it wraps the model, so a backbone unfrozen later would never be synchronised); a warning when the
    backbone to freeze starts from random weights."""
    freeze_epochs = int(cfg.train.freeze_backbone_epochs)
    backbone_frozen(0, freeze_epochs)  # the range check
    if freeze_epochs and context.enabled:
        raise ValueError(f"train.freeze_backbone_epochs={freeze_epochs} is not supported under torchrun: "
                         f"DistributedDataParallel fixes the trained parameters when it wraps the model, so the "
                         f"backbone would never be synchronised once unfrozen; warm the head up in one process "
                         f"(then continue with train.init_from), or set train.freeze_backbone_epochs=0")
    if freeze_epochs >= int(cfg.train.epochs):
        log.warning("train.freeze_backbone_epochs=%d >= train.epochs=%s: the backbone stays frozen for the whole run",
                    freeze_epochs, cfg.train.epochs)
    if freeze_epochs and not (cfg.train.init_backbone_from or cfg.train.init_from):
        log.warning("train.freeze_backbone_epochs=%d freezes a backbone that starts from random weights "
                    "(neither train.init_backbone_from nor train.init_from is set)", freeze_epochs)
    return freeze_epochs


def _load_teacher(cfg: DictConfig, scheme_name: str, device: torch.device) -> Optional[Teacher]:
    """``train.distill.teacher`` loaded and checked, or ``None``; refused with device crops, which cut one view.
    Loading it leaves the random state as it was (building its model draws initial weights): the student
    starts as it would without a teacher."""
    if not cfg.train.distill.teacher:
        return None
    rng = capture_rng_state()
    teacher = load_teacher(str(cfg.train.distill.teacher), float(cfg.train.distill.weight), scheme_name,
                           float(cfg.dataset.crop_scale), int(cfg.dataset.image_size), device,
                           bool(cfg.train.channels_last), float(cfg.dataset.annotation_offset_x))
    restore_rng_state(rng)
    return teacher


def _train_one_epoch(model, criterion, optimizer, loader, device, epoch, epochs, cfg, precision,
                     context: DistributedContext = SINGLE_PROCESS,
                     frozen: Optional[nn.Module] = None, teacher: Optional[Teacher] = None) -> Dict[str, float]:
    """One epoch; the loss and faces/s it reports cover all ranks' faces. ``frozen``: a part of the model
    (the backbone during ``train.freeze_backbone_epochs``) kept in eval mode, its batch-norm statistics fixed.
    ``teacher``: the loss mixes the labels with its predictions (:mod:`pyg_sdfl.engine.distillation`)."""
    model.train()
    if frozen is not None:
        frozen.eval()
    max_steps = cfg.train.max_steps_per_epoch
    total = len(loader) if max_steps is None else min(len(loader), int(max_steps))
    interactive = sys.stderr.isatty() and context.is_main  # a bar on a terminal; plain log lines in files and CI logs
    bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=not interactive)
    loss_sum, faces, t0 = 0.0, 0, time.perf_counter()
    channels_last = bool(cfg.train.channels_last)
    for step, batch in enumerate(loader):
        if step >= total:
            break
        images = _on_device(batch["image"], device, channels_last)
        target = batch["landmarks"].to(device, non_blocking=True)
        with precision_autocast(device, precision):
            pred = model(images)
            taught = None if teacher is None else teacher.targets(_on_device(batch["teacher_image"], device, channels_last))
        if taught is None:
            loss = criterion(pred.float(), target)
        else:
            loss = distillation_loss(criterion, pred.float(), target, taught, teacher.weight)
        # (loss x faces, faces, non-finite) summed over the ranks: every rank stops on any rank's blow-up
        step_stats = all_reduce_sum(context, torch.tensor(  # NCCL reduces CUDA tensors only; else the CPU
            [loss.item() * images.shape[0], images.shape[0], 0.0 if torch.isfinite(loss) else 1.0], dtype=torch.float64,
            device=device if context.backend == "nccl" else "cpu"))
        step_loss = float(step_stats[0] / step_stats[1])
        if step_stats[2] > 0:
            raise _diverged(epoch + 1, f"the loss became {step_loss if context.enabled else loss.item()} at step "
                                       f"{step + 1}", cfg, optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += float(step_stats[0])
        faces += int(step_stats[1])
        bar.update(1)
        if context.is_main and (step % int(cfg.train.log_every) == 0 or step + 1 == total):
            progress = dict(loss=f"{step_loss:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            faces_per_s=f"{faces / (time.perf_counter() - t0):.1f}")
            if interactive:
                bar.set_postfix(**progress)
            else:
                log.info("epoch %d/%d step %d/%d  %s", epoch + 1, epochs, step + 1, total,
                         "  ".join(f"{k} {v}" for k, v in progress.items()))
    bar.close()
    elapsed = time.perf_counter() - t0
    return {"loss": loss_sum / max(faces, 1), "lr": optimizer.param_groups[0]["lr"], "faces_per_s": faces / max(elapsed, 1e-9)}
