"""The one way to build a configuration: the packaged Hydra configs plus command-line-style overrides.

``compose(["dataset=300w", "graph.k=5"])`` returns the same resolved tree that
``python experiments/run.py dataset=300w graph.k=5`` trains with. The library, the CLI, the
notebooks, the benchmarks and the tests all call this function; every key it can return is
declared, with its default and a comment, in a YAML file under ``pyg_sdfl/configs/``.

``validate(cfg)`` checks the typed keys (:data:`KEY_TYPES`) before anything is built or trained:
Hydra parses ``graph.k=2.5`` as a float and ``dataset.image_size=abc`` as a string, and nothing
else would stop them (``int(2.5)`` silently trains with k=2 while the saved config says 2.5).

``instantiate_node(node, key)`` builds a node with a ``_target_`` (:func:`hydra.utils.instantiate`)
and raises the error of what failed under it, not Hydra's wrapper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Type

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["CONFIG_DIR", "compose", "PASSTHROUGH_ERRORS", "instantiate_node", "KeyType", "KEY_TYPES", "ConfigError",
           "validate"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def compose(overrides: Sequence[str] = (), config_name: str = "config", return_hydra_config: bool = False) -> DictConfig:
    """The packaged config ``config_name`` with Hydra ``overrides`` applied (e.g. ``"head=gat"``).

    ``return_hydra_config=True`` adds the ``hydra`` node (sweeper parameters, group choices).
    Safe to call inside a running Hydra job (``experiments/run.py``): the job's Hydra state is put
    back afterwards.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides),
                                 return_hydra_config=return_hydra_config)
    finally:
        if outer is not None:  # the context above restores its own (empty) backup: the instance is new
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)


#: The errors :func:`instantiate_node` raises again as they were (a reader naming its file, a class
#: rejecting an argument); Hydra's own messages for them are several lines around the same text.
PASSTHROUGH_ERRORS: Tuple[Type[BaseException], ...] = (ValueError, KeyError, OSError, RuntimeError)


def instantiate_node(node: Any, key: str, *, passthrough: Tuple[Type[BaseException], ...] = PASSTHROUGH_ERRORS,
                     **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``; errors carry the message of what failed under it.

    Hydra wraps every error of a ``_target_`` in an ``InstantiationException`` of several lines. An
    error of a ``passthrough`` type (by default ``ValueError``, ``KeyError``, ``OSError`` or
    ``RuntimeError``: a reader naming its file, a class rejecting an argument) is raised again as it
    was; anything else (a ``_target_`` that does not import, a wrong keyword) becomes a one-line
    ``ValueError`` naming the config ``key``. (The face-detector registry adds ``ImportError``, so
    that a missing optional package keeps the message naming its extra.)
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, passthrough):
            raise cause from None
        reason = " ".join(str(cause if cause is not None else err).split())
        raise ValueError(f"cannot build {key} ({node.get('_target_')}): {reason}") from cause


class ConfigError(ValueError):
    """A config value of the wrong type; the message names every bad ``key=value``, in one line."""


@dataclass(frozen=True)
class KeyType:
    """The type of one config key: ``kind`` (int, float, bool or str), a list of them, ``None`` allowed.

    ``float`` keys take integers too (``train.optimizer.lr=1`` is 1.0) but must be finite;
    ``int`` keys take neither floats (``2.5``, ``64.0``) nor booleans.
    """

    kind: type
    is_list: bool = False
    optional: bool = False
    choices: Tuple[str, ...] = ()

    def problem(self, value: Any) -> str:
        """``""`` if ``value`` fits, else what was expected (e.g. ``"expected an integer"``)."""
        one, many = _NOUNS[self.kind]
        if value is None:
            return "" if self.optional else f"expected {one}, not null"
        if self.is_list:
            if not isinstance(value, (list, tuple)):
                return f"expected a list of {many}"
            item_type = KeyType(self.kind, choices=self.choices)
            return next((f"{_shown(item)} in the list: {item_type.problem(item)}"
                         for item in value if item_type.problem(item)), "")
        if self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:  # bool is an int in Python: an int key must not take true
            ok = isinstance(value, self.kind) and (self.kind is bool or not isinstance(value, bool))
        if not ok:
            return f"expected {one}"
        if self.choices and value not in self.choices:
            return f"expected one of {', '.join(self.choices)}"
        return ""


_NOUNS = {int: ("an integer", "integers"), float: ("a finite number", "finite numbers"),
          bool: ("true or false", "true/false values"), str: ("a string", "strings")}


def _shown(value: Any) -> str:
    """A value as it is written in an override: ``true``, ``null``, ``[5, 2.5]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


INT, FLOAT, BOOL, STR = KeyType(int), KeyType(float), KeyType(bool), KeyType(str)

# Every key below is declared in a YAML under configs/ (tests/test_config.py checks it, and that
# every integer, float and boolean default there is listed here). Keys a config lacks (another
# head, dataset or loss option) are skipped; ``???`` (a value still to give) is left to the reader.
KEY_TYPES: Dict[str, KeyType] = {
    "seed": INT,
    "device": STR,
    "graph.k": INT,
    "graph.mode": STR,
    "graph.path": KeyType(str, optional=True),
    "evaluate.splits": KeyType(str, is_list=True, choices=("train", "val", "test")),
    "evaluate.batch_size": INT,
    "evaluate.grid_faces": INT,
    "evaluate.threshold": FLOAT,
    "evaluate.normalisation": STR,
    "evaluate.flip_test": BOOL,
    "dataset.scheme": STR,
    "dataset.image_size": INT,
    "dataset.crop_scale": FLOAT,
    "dataset.annotation_offset_x": FLOAT,
    "dataset.val_fraction": FLOAT,
    "dataset.split_seed": INT,
    "dataset.on_bad_image": STR,
    "dataset.cache_images": BOOL,
    "dataset.train.num_faces": INT,
    "dataset.train.seed": INT,
    "dataset.test.num_faces": INT,
    "dataset.test.seed": INT,
    "dataset.train.image_size": INT,
    "dataset.test.image_size": INT,
    "head.nodes_per_point": INT,
    "head.hidden": INT,
    "head.num_blocks": INT,
    "head.map_hidden": INT,
    "head.map_kernel_size": INT,
    "head.dynamic": BOOL,
    "head.softmax_over": STR,
    "loss.lambda_": FLOAT,
    **{f"loss.{term}.{name}": FLOAT for term in ("point", "relative") for name in ("w", "w1", "w2", "eps")},
    "train.epochs": INT,
    "train.batch_size": INT,
    "train.num_workers": INT,
    "train.crops": KeyType(str, choices=("loader", "device")),  # pyg_sdfl.engine.training.TRAIN_CROPS
    "train.optimizer.lr": FLOAT,
    "train.optimizer.weight_decay": FLOAT,
    "train.optimizer.momentum": FLOAT,
    "train.scheduler.milestones": KeyType(int, is_list=True),
    "train.scheduler.gamma": FLOAT,
    **{f"train.augment.{name}": FLOAT for name in ("rotation", "translation", "scale", "flip", "occlusion_prob",
                                                    "occlusion_fraction")},
    "train.balance": BOOL,
    "train.val_every": INT,
    "train.max_steps_per_epoch": KeyType(int, optional=True),
    "train.resume": KeyType(str, optional=True),
    "train.init_from": KeyType(str, optional=True),
    "train.init_backbone_from": KeyType(str, optional=True),
    "train.freeze_backbone_epochs": INT,
    "train.backbone_lr_scale": FLOAT,
    "train.distill.teacher": KeyType(str, optional=True),
    "train.distill.weight": FLOAT,
    "train.sync_batchnorm": BOOL,
    "train.precision": STR,
    "train.channels_last": BOOL,
    "train.compile": BOOL,
    "train.graph_backend": KeyType(str, choices=("pyg", "fused")),  # pyg_sdfl.nn.heads.GRAPH_BACKENDS
    "train.log_every": INT,
    "train.max_val_nme": FLOAT,
    "train.eval_untrained": BOOL,
    # face detectors (configs/detector, composed with config_name="detection")
    "detector.scale_factor": FLOAT,
    "detector.min_neighbors": INT,
    "detector.min_size": INT,
    "detector.max_side": INT,
    "detector.upsample": INT,
    "detector.score_threshold": FLOAT,
    "detector.min_face_size": FLOAT,
    "detector.thresholds": KeyType(float, is_list=True),
    "detector.nms_thresholds": KeyType(float, is_list=True),
    "detector.cascade": STR,
    "detector.device": STR,
}

_ABSENT = object()


def validate(cfg: DictConfig) -> None:
    """Check the type of every key of :data:`KEY_TYPES` that ``cfg`` has; call it before building anything.

    Raises:
        ConfigError: one line listing each bad value, e.g.
            ``bad config value: graph.k=2.5: expected an integer; dataset.image_size=abc: expected an integer``.
    """
    problems: List[str] = []
    for key, key_type in KEY_TYPES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        problem = key_type.problem(value)
        if problem:
            problems.append(f"{key}={_shown(value)}: {problem}")
    if problems:
        raise ConfigError("bad config value: " + "; ".join(problems))
