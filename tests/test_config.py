"""config.compose: the packaged configs with overrides, also from inside a running Hydra job."""
from __future__ import annotations

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException

from pyg_sdfl.config import CONFIG_DIR, compose


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
