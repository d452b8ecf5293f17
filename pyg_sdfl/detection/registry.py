"""The face detectors by name: one Hydra config group, ``pyg_sdfl/configs/detector``.

A detector is registered by one YAML file, ``configs/detector/<name>.yaml``: its class as
``_target_`` and every constructor parameter with its default and a comment. Adding a detector is
that file plus its class (the :class:`~pyg_sdfl.detection.base.Detector` protocol, ``name`` equal to
the file's stem); nothing here lists them.

The group is composed in a config of its own, ``configs/detection.yaml`` (``defaults: [detector:
haar]``), not in the training config (``config.yaml``): a detector is chosen when photos are
processed, not when a model is trained, and a run's saved config stays free of it. So

    detector_config("yuface", score_threshold=0.6)
      == compose(["detector=yuface", "detector.score_threshold=0.6"], config_name="detection").detector

and :func:`create_detector` builds that node with :func:`hydra.utils.instantiate`
(:func:`pyg_sdfl.config.instantiate_node`). Its errors are one line each:

* an unknown name: ``ValueError`` listing :func:`available_detectors`;
* an unknown parameter: ``ValueError`` naming it and the parameters the detector takes;
* a value of the wrong type: :class:`pyg_sdfl.config.ConfigError` (a ``ValueError``), as for any
  config key; the class's own ``ValueError`` for a value out of range;
* a missing optional package: the detector's ``ImportError`` naming the extra that installs it
  (``pip install ".[yuface]"``), not Hydra's ``InstantiationException``.

:func:`detector_from_record` rebuilds a detector from ``{"name": ..., **params}`` (the record a
fitted box mapping keeps); a record without ``"name"`` is a Haar detector's, as in the shipped
``haar_box_mapping.json``.
"""
from __future__ import annotations

import importlib
import numbers
import re
from typing import Any, Dict, List, Mapping

import numpy as np
from omegaconf import DictConfig

from pyg_sdfl import config
from pyg_sdfl.detection.base import Detector

__all__ = [
    "DETECTOR_GROUP",
    "DETECTION_CONFIG",
    "DEFAULT_RECORD_NAME",
    "available_detectors",
    "installed_detectors",
    "detector_parameters",
    "detector_config",
    "create_detector",
    "detector_from_record",
    "detector_fitted_with",
    "default_detector",
    "override_value",
]

DETECTOR_GROUP = "detector"  #: the config group: ``configs/detector/<name>.yaml``
DETECTION_CONFIG = "detection"  #: the primary config that composes it: ``configs/detection.yaml``
DEFAULT_RECORD_NAME = "haar"  #: the detector of a record without ``"name"`` (the shipped Haar mapping's)


def default_detector() -> str:
    """The detector group's default, as ``configs/detection.yaml`` declares it (the Landmarker's
    default detector where it is installed)."""
    from pyg_sdfl.config import compose

    return str(compose(config_name=DETECTION_CONFIG, return_hydra_config=True).hydra.runtime.choices[DETECTOR_GROUP])


def available_detectors() -> List[str]:
    """The registered detector names (the YAML files of ``configs/detector``), sorted."""
    return sorted(p.stem for p in (config.CONFIG_DIR / DETECTOR_GROUP).glob("*.yaml"))


def installed_detectors() -> List[str]:
    """The registered detectors that can be built here: those whose class and optional packages
    import. Each is built once with its defaults to find out (Haar loads its cascade, MTCNN its
    networks): a listing for people, not a call for a loop."""
    installed = []
    for name in available_detectors():
        try:
            create_detector(name)
        except ImportError:
            continue
        installed.append(name)
    return installed


def _check_name(name: Any) -> None:
    names = available_detectors()
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"unknown detector {name!r}; the registered detectors are: {', '.join(names)}")


def _compose(name: str, overrides: List[str] = ()) -> DictConfig:
    return config.compose([f"{DETECTOR_GROUP}={name}", *overrides], config_name=DETECTION_CONFIG)


def _is_reserved(key: str) -> bool:
    """Hydra's own keys (``_target_``, ``_partial_``, ...), not constructor parameters."""
    return key.startswith("_") and key.endswith("_")


def detector_parameters(name: str) -> Dict[str, Any]:
    """The constructor parameters of detector ``name`` with their defaults, as its YAML declares them."""
    _check_name(name)
    node = _compose(name)[DETECTOR_GROUP]
    return {str(k): node[k] for k in node if not _is_reserved(str(k))}


def override_value(value: Any) -> str:
    """``value`` written as the right-hand side of a Hydra override, so that the override sets
    exactly ``value``: ``null``, ``true``, ``3``, ``0.5``, ``1e-05``, ``inf``, ``'text'`` (quoted,
    quotes and the backslashes before them escaped), ``[0.6,0.7,0.7]``. ``ValueError`` for other
    types and for a string holding ``${`` (an interpolation)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, str):
        if "${" in value:
            raise ValueError(f"a parameter value may not contain '${{' (an interpolation): {value!r}")
        # Hydra's quoted strings: a backslash is literal except in a run just before a quote
        # (the closing one included), where each stands for half of itself
        text = re.sub(r"(\\*)'", lambda m: "\\" * (2 * len(m.group(1))) + "\\'", value)
        text = re.sub(r"(\\+)$", lambda m: "\\" * (2 * len(m.group(1))), text)
        return f"'{text}'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    raise ValueError(f"cannot pass a {type(value).__name__} as a detector parameter: {value!r}")


def detector_config(name: str, **params: Any) -> DictConfig:
    """The config node of detector ``name`` with ``params`` set: ``_target_`` and every parameter
    (composed as ``compose(["detector=<name>", "detector.<key>=<value>", ...],
    config_name="detection")``, then :func:`pyg_sdfl.config.validate`).

    Raises:
        ValueError: an unknown ``name`` (listing the registered ones) or parameter (naming the
            parameters the detector takes); :class:`~pyg_sdfl.config.ConfigError` for a value of
            the wrong type.
    """
    _check_name(name)
    cfg = _compose(name)
    accepted = [str(k) for k in cfg[DETECTOR_GROUP] if not _is_reserved(str(k))]
    unknown = [key for key in params if key not in accepted]
    if unknown:
        raise ValueError(f"detector {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(accepted) or 'none'}")
    if params:
        cfg = _compose(name, [f"{DETECTOR_GROUP}.{key}={override_value(value)}" for key, value in params.items()])
    config.validate(cfg)
    return cfg[DETECTOR_GROUP]


def _import_target(name: str, target: str) -> None:
    """Import the class ``target`` of detector ``name`` before Hydra does: an ``ImportError`` of
    one line (the module's own message when one of its imports fails, which names the extra)."""
    module, _, attr = target.rpartition(".")
    try:
        imported = importlib.import_module(module)
    except ImportError as err:
        missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
        if missing and (module == missing or module.startswith(missing + ".")):
            raise ImportError(f"detector {name!r}: configs/{DETECTOR_GROUP}/{name}.yaml names {target}, "
                              f"but module {module} is not in this installation") from err
        raise ImportError(f"detector {name!r} ({target}) cannot be imported: {' '.join(str(err).split())}") from err
    if not hasattr(imported, attr):
        raise ImportError(f"detector {name!r}: configs/{DETECTOR_GROUP}/{name}.yaml names {target}, "
                          f"but {module} has no {attr!r}")


def create_detector(name: str, **params: Any) -> Detector:
    """Build detector ``name`` (:func:`available_detectors`) with ``params`` over its YAML defaults,
    e.g. ``create_detector("yuface", score_threshold=0.6)``.

    Raises:
        ValueError: an unknown name or parameter, a bad value (:func:`detector_config`, or the
            class's own check).
        ImportError: the detector's optional package is missing (the message names its extra,
            e.g. ``pip install ".[peers]"``), or its module is not in this installation.
    """
    node = detector_config(name, **params)
    _import_target(name, str(node["_target_"]))
    return config.instantiate_node(node, f"detector {name!r}", passthrough=(ImportError, *config.PASSTHROUGH_ERRORS))


def detector_from_record(record: Mapping[str, Any]) -> Detector:
    """The detector of a record ``{"name": ..., **params}`` (``{"name": d.name, **d.params}`` of a
    detector ``d``); without ``"name"`` it is :data:`DEFAULT_RECORD_NAME` (``"haar"``: the records
    of Haar box mappings, ``pyg_sdfl/weights/haar_box_mapping.json``, have none). Every other key
    must be a parameter of that detector (:func:`create_detector`)."""
    if not isinstance(record, Mapping):
        raise ValueError(f"a detector record must be a mapping, got {type(record).__name__}")
    params = {str(k): v for k, v in record.items()}
    return create_detector(params.pop("name", DEFAULT_RECORD_NAME), **params)


def detector_fitted_with(mapping: Any, name: str) -> Detector:
    """The detector ``name`` with the settings ``mapping`` (a box or keypoint mapping, or ``None``)
    records it was fitted with, so that its boxes are the kind the mapping expects; its defaults
    when the mapping records none."""
    record = dict(getattr(mapping, "detector", None) or {})
    if not record:
        return create_detector(name)
    record.setdefault("name", name)
    return detector_from_record(record)
