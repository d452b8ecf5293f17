"""The one way to build a configuration: the packaged Hydra configs plus command-line-style overrides.

``compose(["dataset=300w", "graph.k=5"])`` returns the same resolved tree that
``python experiments/run.py dataset=300w graph.k=5`` trains with. The library, the CLI, the
notebooks, the benchmarks and the tests all call this function; every key it can return is
declared, with its default and a comment, in a YAML file under ``pyg_sdfl/configs/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

__all__ = ["CONFIG_DIR", "compose"]

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
