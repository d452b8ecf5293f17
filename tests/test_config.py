"""config.compose: the packaged configs with overrides, also from inside a running Hydra job; config.validate."""
from __future__ import annotations

import re

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from pyg_sdfl.config import CONFIG_DIR, KEY_TYPES, ConfigError, compose, validate


def test_compose_applies_overrides_to_the_packaged_defaults():
    cfg = compose(["head=gat", "graph.k=5"])
    assert cfg.graph.k == 5 and cfg.head.layer == "gat" and cfg.dataset.name == "synthetic"
    assert "hydra" not in cfg and "hydra" in compose(return_hydra_config=True)


def test_compose_inside_a_hydra_job_restores_the_jobs_state():
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        assert compose(["graph.k=2"]).graph.k == 2
        assert GlobalHydra.instance().hydra is outer
    assert not GlobalHydra.instance().is_initialized()


def test_unknown_group_option_names_it():
    with pytest.raises(MissingConfigException, match="nosuchhead"):
        compose(["head=nosuchhead"])


# ---- validate: the typed keys (KEY_TYPES) ----

def _yaml_leaves() -> dict:
    """``{dotted key: set of default types}`` of every value in the YAMLs, with the group as prefix
    (``dataset/300w.yaml: image_size`` -> ``dataset.image_size``; ``@package _global_`` files at the root;
    the ``hydra/`` group, Hydra's launcher settings, left out)."""
    import yaml

    leaves: dict = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                if not prefix and key in ("defaults", "hydra"):
                    continue
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            leaves.setdefault(prefix, set()).add(type(node))

    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        text = path.read_text()
        group = path.relative_to(CONFIG_DIR).parts[:-1]
        if group[:1] == ("hydra",):  # Hydra's own settings (launchers): typed by the plugins' schemas, not ours
            continue
        prefix = "" if not group or "@package _global_" in text else ".".join(group)
        walk(yaml.safe_load(text) or {}, prefix)
    return leaves


def test_every_typed_key_is_declared_in_a_yaml_and_every_typed_default_is_listed():
    leaves = _yaml_leaves()
    assert sorted(set(KEY_TYPES) - set(leaves)) == []
    typed = {key for key, types in leaves.items() if types & {int, float, bool} and not key.split(".")[-1].startswith("_")}
    assert sorted(typed - set(KEY_TYPES)) == []


def _group_options(group: str) -> list:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("overrides", [[]] + [[f"{group}={option}"] for group in
                                               ("dataset", "backbone", "head", "loss", "train", "experiment", "variant")
                                               for option in _group_options(group)])
def test_every_packaged_option_passes_validation(overrides):
    validate(compose(overrides))


@pytest.mark.parametrize("option", _group_options("train"))
def test_every_train_option_builds_its_optimiser_and_schedule(option):
    """train=paper once handed its StepLR the milestones it inherited from train=quick."""
    import torch
    from hydra.utils import instantiate

    cfg = compose([f"train={option}"])
    optimizer = instantiate(cfg.train.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
    scheduler = instantiate(cfg.train.scheduler)(optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == float(cfg.train.optimizer.lr)
    scheduler.step()


@pytest.mark.parametrize("option", _group_options("detector"))
def test_every_detector_option_composes_apart_and_passes_validation(option):
    """Face detectors are a config of their own (configs/detection.yaml), not part of a training run's."""
    cfg = compose([f"detector={option}"], config_name="detection")
    assert set(cfg) == {"detector"} and "_target_" in cfg.detector
    validate(cfg)


def test_float_values_for_integer_keys_are_refused_with_every_key_in_one_line():
    """Hydra parses these as floats and strings; int() would train with k=2 and 64 px silently."""
    cfg = compose(["graph.k=2.5", "dataset.image_size=64.9", "dataset.train.num_faces=abc"])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert "\n" not in message
    for part in ("graph.k=2.5: expected an integer", "dataset.image_size=64.9: expected an integer",
                 "dataset.train.num_faces=abc: expected an integer"):
        assert part in message
    with pytest.raises(ConfigError, match=r"^bad config value: dataset.image_size=abc: expected an integer$"):
        validate(compose(["dataset.image_size=abc"]))


@pytest.mark.parametrize("override, expected", [
    ("graph.k=true", "graph.k=true: expected an integer"),  # bool is an int in Python
    ("graph.k=64.0", "graph.k=64.0: expected an integer"),
    ("graph.k=null", "graph.k=null: expected an integer, not null"),
    ("train.optimizer.lr=nan", "train.optimizer.lr=nan: expected a finite number"),
    ("train.optimizer.lr=fast", "train.optimizer.lr=fast: expected a finite number"),
    ("evaluate.flip_test=1", "evaluate.flip_test=1: expected true or false"),
    ("evaluate.splits=test", "evaluate.splits=test: expected a list of strings"),
    ("evaluate.splits=[val,bogus]", "bogus in the list: expected one of train, val, test"),
    ("train.scheduler.milestones=[5,2.5]", "2.5 in the list: expected an integer"),
    ("graph.mode=3", "graph.mode=3: expected a string"),
])
def test_wrong_types_name_the_key_the_value_and_the_type(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate(compose([override]))


@pytest.mark.parametrize("override", ["train.optimizer.lr=1", "train.max_steps_per_epoch=null", "graph.path=null",
                                      "train.max_steps_per_epoch=3", "evaluate.splits=[train,val,test]", "graph.k=5"])
def test_fitting_values_pass(override):
    validate(compose([override]))


def test_validate_skips_keys_the_config_does_not_have_and_values_still_to_give():
    validate(OmegaConf.create({"graph": {"k": 3}, "dataset": {"root": "???", "image_size": "${graph.k}"}}))
    with pytest.raises(ConfigError, match="dataset.image_size=2.5"):
        validate(OmegaConf.create({"x": 2.5, "dataset": {"image_size": "${x}"}}))
