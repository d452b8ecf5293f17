"""The comparison presets (configs/experiment: head_comparison, k_sweep, ablation, mining on the shared
sweep_protocol) and the one-change variants (configs/variant): what they compose to, what they sweep,
and that every head of the head comparison trains through the real engine."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Sequence

import pytest
from omegaconf import DictConfig, OmegaConf

from pyg_sdfl.studies.runs import flatten_config
from pyg_sdfl.config import compose
from pyg_sdfl.engine.training import train
from pyg_sdfl.schemes import get_scheme

CONFIGS = Path(__file__).resolve().parents[1] / "pyg_sdfl" / "configs"
PRESETS = ("head_comparison", "k_sweep", "ablation", "mining")
HEADS = ("sdfl", "fc", "gcn", "gat", "gatv2", "sage", "transformer", "graphconv")
VARIANTS = sorted(p.stem for p in (CONFIGS / "variant").glob("*.yaml"))


def _compose(overrides: Sequence[str], hydra: bool = False) -> DictConfig:
    return compose(overrides, return_hydra_config=hydra)


def _flat(overrides: Sequence[str]) -> Dict[str, Any]:
    return flatten_config(OmegaConf.to_container(_compose(overrides), resolve=True))


def _sweep_values(cfg: DictConfig, key: str) -> list:
    return [v.strip() for v in str(cfg.hydra.sweeper.params[key]).split(",")]


# ============================================================================ the shared protocol
@pytest.mark.parametrize("preset", PRESETS + ("sweep_protocol",))
def test_preset_composes_to_the_sweep_protocol(preset: str) -> None:
    cfg = _compose([f"experiment={preset}", "dataset.root=/x"])
    assert cfg.dataset.name == "300w" and cfg.dataset.root == "/x" and cfg.dataset.train.root == "/x"
    assert cfg.dataset.image_size == 128 and cfg.dataset.crop_scale == 1.2 and cfg.dataset.cache_images
    assert cfg.train.init_backbone_from == "runs/backbone_pretrain/best.ckpt"  # experiment=backbone_pretrain's
    assert cfg.backbone.name == "resnet18"
    assert cfg.head._target_ == "pyg_sdfl.nn.heads.SDFLHead" and cfg.head.dynamic and cfg.head.softmax_over == "target"
    assert cfg.loss.point._target_ == "pyg_sdfl.losses.SoftWingLoss" and cfg.loss.lambda_ == 1.0
    assert cfg.graph.k == 3 and cfg.graph.mode == "separate" and cfg.graph.path is None
    assert cfg.train.epochs == 40 and cfg.train.batch_size == 32 and cfg.train.precision == "bf16"
    assert cfg.train.channels_last and cfg.train.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.train.optimizer.lr == pytest.approx(3e-4) and list(cfg.train.scheduler.milestones) == [24, 34]
    assert cfg.train.val_every == 1 and cfg.train.max_steps_per_epoch is None
    assert list(cfg.evaluate.splits) == ["val", "test"] and cfg.evaluate.threshold == pytest.approx(0.1)
    assert "hydra" not in cfg
    # every preset gives the same job config: only the sweeper and the sweep folder differ
    assert OmegaConf.to_container(cfg, resolve=True) == \
        OmegaConf.to_container(_compose(["experiment=sweep_protocol", "dataset.root=/x"]), resolve=True)


def test_the_sweep_protocol_needs_a_data_root() -> None:
    from omegaconf.errors import MissingMandatoryValue

    cfg = _compose(["experiment=head_comparison"])
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.dataset.root


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_sweeper_params_and_run_folders(preset: str) -> None:
    cfg = _compose([f"experiment={preset}", "dataset.root=/x"], hydra=True)
    assert cfg.hydra.sweep.dir == f"runs/{preset}"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.override_dirname}"  # unresolved
    assert set(cfg.hydra.job.config.override_dirname.exclude_keys) >= {"experiment", "dataset.root"}
    assert _sweep_values(cfg, "seed") == ["0", "1", "2"]  # three seeds by default
    params = set(cfg.hydra.sweeper.params)
    if preset == "head_comparison":
        assert params == {"head", "seed"}
        assert _sweep_values(cfg, "head") == list(HEADS)
        assert set(HEADS) == {p.stem for p in (CONFIGS / "head").glob("*.yaml")}  # every head file is swept
    elif preset == "k_sweep":
        assert params == {"graph.k", "seed"}
        ks = [int(k) for k in _sweep_values(cfg, "graph.k")]
        assert ks == [1, 2, 3, 4, 6, 9, 17, 67] and len(ks) == 8
        assert max(ks) == get_scheme("300w").num_points - 1  # the dense graph
    elif preset == "ablation":
        assert params == {"variant", "seed"}
        assert _sweep_values(cfg, "variant") == ["paper", "binary_adjacency", "l1_loss", "wing_loss",
                                                 "no_relative_loss", "column_softmax"]
    else:
        assert params == {"variant", "seed"}
        assert _sweep_values(cfg, "variant") == ["paper", "joint_mining", "random_graph"]
    if "variant" in params:
        assert set(_sweep_values(cfg, "variant")) <= set(VARIANTS)


def test_every_variant_is_swept_by_a_preset() -> None:
    swept = set()
    for preset in ("ablation", "mining"):
        swept |= set(_sweep_values(_compose([f"experiment={preset}", "dataset.root=/x"], hydra=True), "variant"))
    assert swept == set(VARIANTS)


# ============================================================================ one change per variant
def _diff(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, tuple]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _loss_swap(target: str, params: Dict[str, float]) -> Dict[str, tuple]:
    soft_wing = {"w1": 2.0, "w2": 20.0, "eps": 0.5}
    out = {}
    for term in ("point", "relative"):
        out[f"loss.{term}._target_"] = ("pyg_sdfl.losses.SoftWingLoss", target)
        for name in set(soft_wing) | set(params):
            out[f"loss.{term}.{name}"] = (soft_wing.get(name), params.get(name))
    return out


EXPECTED_CHANGE = {
    "paper": {},
    "binary_adjacency": {"head.dynamic": (True, False)},
    "column_softmax": {"head.softmax_over": ("target", "source")},
    "joint_mining": {"graph.mode": ("separate", "joint")},
    "random_graph": {"graph.mode": ("separate", "random")},
    "no_relative_loss": {"loss.lambda_": (1.0, 0.0)},
    "l1_loss": _loss_swap("pyg_sdfl.losses.L1Loss", {}),
    "wing_loss": _loss_swap("pyg_sdfl.losses.WingLoss", {"w": 10.0, "eps": 2.0}),
}


def test_expected_changes_cover_every_variant() -> None:
    assert set(EXPECTED_CHANGE) == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(EXPECTED_CHANGE))
def test_variant_changes_exactly_one_thing(variant: str) -> None:
    paper = _flat(["experiment=ablation", "dataset.root=/x", "variant=paper"])
    changed = _flat(["experiment=ablation", "dataset.root=/x", f"variant={variant}"])
    diff = _diff(paper, changed)
    assert diff == EXPECTED_CHANGE[variant]
    # "one thing": one setting, or one loss family replacing the other for both loss terms
    groups = {k.rsplit(".", 1)[0] if k.startswith("loss.") and k != "loss.lambda_" else k for k in diff}
    assert len(groups) <= 2 and (len(groups) <= 1 or groups == {"loss.point", "loss.relative"})


def test_paper_variant_is_the_default() -> None:
    assert _flat(["experiment=ablation", "dataset.root=/x", "variant=paper"]) == \
        _flat(["experiment=ablation", "dataset.root=/x"])


# ============================================================================ every head trains
@pytest.mark.parametrize("head", HEADS)
def test_one_training_step_per_head(head: str, tmp_path: Path) -> None:
    cfg = _compose(["experiment=head_comparison", f"head={head}", "dataset=synthetic", "dataset.train.num_faces=40",
                    "dataset.test.num_faces=8", "dataset.image_size=64", "train.epochs=1",
                    "train.max_steps_per_epoch=1", "train.batch_size=8", "evaluate.batch_size=8",
                    "train.init_backbone_from=null"])  # the shared backbone is a real run's (backbone_pretrain)
    assert cfg.train.precision == "bf16" and cfg.train.channels_last  # the preset's levers stay on
    result = train(cfg, tmp_path)
    assert result.epochs_run == 1 and len(result.history) == 1
    assert math.isfinite(result.history[0]["loss"]) and result.history[0]["loss"] > 0
    assert math.isfinite(result.best_val_nme) and result.best_epoch == 1
    assert (tmp_path / "best.ckpt").is_file() and (tmp_path / "graph.pt").is_file()


def test_the_256_px_fine_tune_starts_from_a_named_file_not_from_scratch() -> None:
    """The preset that made the shipped 256 px model starts from the 160 px file its YAML says how to
    write; a start from scratch (init_from null, e.g. a ``???`` that OmegaConf's merge drops) would
    silently train another model."""
    cfg = _compose(["experiment=cpu_300w_256_finetune", "dataset.root=/x"])
    assert cfg.dataset.image_size == 256
    assert cfg.train.init_from == "sdfl_300w_160.pt"


@pytest.mark.parametrize("preset, key", [("fast_300w_light_distill", "train.distill.teacher"),
                                         ("cpu_300w_160_light", "train.init_backbone_from"),
                                         ("cpu_300w_160_light_warm", "train.init_backbone_from")])
def test_presets_of_shipped_models_start_from_the_160_px_file_they_were_made_from(preset: str, key: str) -> None:
    """These presets made 300w-fast, 300w-fast-160 and the light-head study from the 160 px model; the
    package's sdfl_300w.pt is the 256 px model since 2026-12-07, so naming it would train something else."""
    cfg = _compose([f"experiment={preset}", "dataset.root=/x"])
    assert OmegaConf.select(cfg, key) == "sdfl_300w_160.pt"
