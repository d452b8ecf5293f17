"""End-to-end engine tests on tiny synthetic runs (seconds each on 2 CPU cores)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_sdfl.config import ConfigError, compose
from pyg_sdfl.engine.builders import build_datasets, build_graph, build_model, load_splits
from pyg_sdfl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyg_sdfl.engine.evaluation import evaluate
from pyg_sdfl.engine import training as training_module
from pyg_sdfl.engine.size_transfer import resample_map_weight
from pyg_sdfl.engine.training import TrainingDiverged, train

TINY = [
    "train=quick",  # the schedule these tests were written against (fp32), not the first run's
    "dataset.image_size=64",
    "dataset.train.num_faces=192",
    "dataset.test.num_faces=32",
    "dataset.val_fraction=0.17",
    "train.batch_size=16",
    "train.num_workers=0",
    "evaluate.grid_faces=4",
]


def tiny_cfg(*extra: str):
    return compose(TINY + list(extra))


def _val_nme(cfg, checkpoint: Path | None) -> float:
    splits = load_splits(cfg.dataset)
    graph = build_graph(cfg.graph, splits)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg, graph, splits.scheme.num_points)
    if checkpoint is not None:
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
    ds = build_datasets(cfg, splits)["val"]
    return evaluate(model, ds, splits.scheme)["summary"]["all"]["nme"]


@pytest.mark.slow
def test_short_training_lowers_validation_nme(tmp_path):
    cfg = tiny_cfg("train.epochs=8", "train.optimizer.lr=3e-3", "train.scheduler.milestones=[6]")
    untrained = _val_nme(cfg, None)
    result = train(cfg, tmp_path)
    trained = _val_nme(cfg, tmp_path / "best.ckpt")
    assert result.best_val_nme == pytest.approx(trained, rel=1e-5)
    assert trained < 0.5 * untrained, (untrained, trained)


def test_resume_continues_with_the_same_state(tmp_path):
    base = ["train.epochs=3", "train.max_steps_per_epoch=3"]
    full = train(tiny_cfg(*base), tmp_path / "full")
    # interrupted run: stops after 2 epochs, then resumes to 3
    cut = train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=3"), tmp_path / "cut")
    first_part = load_checkpoint(tmp_path / "cut" / "last.ckpt")["meta"]["wall_time_s"]
    resumed = train(tiny_cfg(*base, "train.resume=last"), tmp_path / "cut")
    # the wall time adds up both parts (the first part's, up to its last checkpoint, is stored there)
    assert 0 < resumed.wall_time_before_s == first_part <= cut.wall_time_s
    assert resumed.wall_time_s > resumed.wall_time_before_s
    a = load_checkpoint(tmp_path / "full" / "last.ckpt")
    b = load_checkpoint(tmp_path / "cut" / "last.ckpt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_resume_refuses_a_different_graph(tmp_path):
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1"), tmp_path)
    with pytest.raises(CheckpointError, match="graph"):
        train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1", "graph.k=4", "train.resume=last"), tmp_path)


def test_strict_loading_names_the_keys(tmp_path):
    from pyg_sdfl.engine.checkpoint import load_state_dict_strict

    cfg = tiny_cfg()
    splits = load_splits(cfg.dataset)
    model = build_model(cfg, build_graph(cfg.graph, splits), 68)
    state = model.state_dict()
    state["head.extra_weight"] = torch.zeros(1)
    missing = next(iter(state))
    del state[missing]
    with pytest.raises(CheckpointError, match=r"missing keys: .*" + missing.replace(".", r"\.")) as err:
        load_state_dict_strict(model, state)
    assert "head.extra_weight" in str(err.value)


def test_scheme_mismatch_is_reported():
    with pytest.raises(ValueError, match="scheme"):
        load_splits(tiny_cfg("dataset.scheme=wflw").dataset)


def test_cli_evaluate_prints_metrics_json(tmp_path):
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=2"), tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "pyg_sdfl.cli", "evaluate", "--checkpoint", str(tmp_path / "last.ckpt"),
         "--dataset", "synthetic", "--split", "val", "test", "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    for split in ("val", "test"):
        row = payload["metrics"][split]["all"]
        assert set(row) >= {"nme", "fr", "auc", "count"}
        assert np.isfinite(row["nme"]) and row["count"] > 0
    assert (tmp_path / "eval" / "ced.png").stat().st_size > 0


def test_epochs_below_one_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"train.epochs=0: a run needs at least one epoch"):
        train(tiny_cfg("train.epochs=0"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_divergence_with_a_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # Epoch 1 is sane; after epoch 2's steps the output layer's bias is pushed far out (finite), so every
    # prediction lands far off the image. (Raising the lr to 20 instead gave finite predictions on one CPU
    # and NaN on another: the fault is injected so that the finite path is the one tested everywhere.)
    real_epoch = training_module._train_one_epoch

    def epoch_then_blow_up(model, *args, **kwargs):
        stats = real_epoch(model, *args, **kwargs)
        if args[4] == 1:  # epoch index (0-based): the second epoch
            with torch.no_grad():
                model.head.output_conv.bias.add_(1e4)
        return stats

    monkeypatch.setattr(training_module, "_train_one_epoch", epoch_then_blow_up)
    cfg = tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=2", "train.optimizer.lr=1e-3")
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 2: validation NME .*% is above "
                                               r"train.max_val_nme=100.0 \(10000%\); lower the learning rate "
                                               r"\(train.optimizer.lr=0.001\); last.ckpt keeps "
                                               r"epoch 1") as err:
        train(cfg, tmp_path)
    assert "\n" not in str(err.value)
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 1


def test_non_finite_validation_predictions_name_the_cause_and_the_remedy(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"epoch 1: validation predictions are NaN or infinite; lower the "
                                               r"learning rate \(train.optimizer.lr=1000000.0\); no checkpoint"):
        train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=3", "train.optimizer.lr=1e6"), tmp_path)
    assert not (tmp_path / "last.ckpt").exists()


def test_resume_refuses_a_best_ckpt_that_is_not_the_recorded_best(tmp_path):
    train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1"), tmp_path)
    last = load_checkpoint(tmp_path / "last.ckpt")
    last["best"] = {"epoch": 1, "val_nme": 0.5}  # weights no file holds: nothing can repair best.ckpt
    save_checkpoint(last, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"records best epoch 1 \(val NME 50%\) but .*best.ckpt holds epoch "
                                              r"[12] \(val NME .*%\) and no checkpoint with those weights is left"):
        train(tiny_cfg("train.epochs=3", "train.max_steps_per_epoch=1", "train.resume=last"), tmp_path)


@pytest.mark.parametrize("override", ["graph.k=2.5", "dataset.image_size=64.9", "dataset.image_size=abc"])
def test_a_value_of_the_wrong_type_stops_before_anything_is_built(tmp_path, override):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=f"{key}={value}: expected an integer"):
        train(compose(["dataset.train.num_faces=32", override]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_untrained_baseline_is_recorded_and_leaves_the_run_unchanged(tmp_path):
    """train.eval_untrained scores the fresh model on val first; the RNG is put back, so the run's
    weights are exactly those of a run without the baseline."""
    base = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.precision=fp32"]
    with_baseline = train(tiny_cfg(*base, "train.eval_untrained=true"), tmp_path / "a")
    without = train(tiny_cfg(*base, "train.eval_untrained=false"), tmp_path / "b")
    assert without.untrained_val_nme is None
    assert np.isfinite(with_baseline.untrained_val_nme) and with_baseline.untrained_val_nme > 0
    assert load_checkpoint(tmp_path / "a" / "last.ckpt")["untrained_val_nme"] == with_baseline.untrained_val_nme
    a = load_checkpoint(tmp_path / "a" / "last.ckpt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert with_baseline.best_val_nme == without.best_val_nme


def test_learning_curve_plot(tmp_path):
    from pyg_sdfl.engine.reporting import plot_learning_curve

    history = [{"epoch": 1, "loss": 3.0, "val_nme": 0.2}, {"epoch": 2, "loss": 2.0}, {"epoch": 3, "loss": 1.0, "val_nme": 0.1}]
    path = plot_learning_curve(history, tmp_path / "curve.png", untrained_val_nme=0.5, best_epoch=3)
    assert path.stat().st_size > 5000


def test_init_from_starts_from_the_weights_with_a_fresh_schedule(tmp_path):
    first = tmp_path / "first"
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=2"), first)
    source = load_checkpoint(first / "last.ckpt")
    # lr 0: AdamW leaves the parameters where init_from put them (BatchNorm statistics still move)
    cfg = tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1", "train.optimizer.lr=0",
                   f"train.init_from={first / 'last.ckpt'}", "seed=7")
    train(cfg, tmp_path / "second")
    tuned = load_checkpoint(tmp_path / "second" / "last.ckpt")
    assert tuned["epoch"] == 1  # a new run: its own epochs, not the source's
    params = [k for k in source["model"] if "running_" not in k and "num_batches" not in k]
    assert params and all(torch.equal(tuned["model"][k], source["model"][k]) for k in params)
    with pytest.raises(CheckpointError, match=r"train.init_from=.*last.ckpt: the checkpoint's landmark graph \(k=3"):
        train(tiny_cfg("train.epochs=1", f"train.init_from={first / 'last.ckpt'}", "graph.k=2"), tmp_path / "third")


def test_init_from_a_model_trained_at_another_crop_size_resamples_its_map_reading_weights(tmp_path, caplog):
    first = tmp_path / "first"  # 64 px crops: a 2 x 2 map
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1"), first)
    source = load_checkpoint(first / "last.ckpt")["model"]
    cfg = tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1", "train.optimizer.lr=0", "dataset.image_size=96",
                   f"train.init_from={first / 'last.ckpt'}")
    with caplog.at_level("INFO", logger="pyg_sdfl.engine.training"):
        train(cfg, tmp_path / "second")  # 96 px: 3 x 3
    keys = ["head.input_block.conv.lin_self.weight", "head.input_block.conv.lin_nb.weight"]
    assert f"trained on 64 px crops (2x2 map), this run uses 96 px (3x3): {', '.join(keys)} resampled" in caplog.text
    tuned = load_checkpoint(tmp_path / "second" / "last.ckpt")["model"]
    for key in keys:
        torch.testing.assert_close(tuned[key], resample_map_weight(source[key], (2, 2), (3, 3)))
    params = [k for k in source if k not in keys and "running_" not in k and "num_batches" not in k]
    assert params and all(torch.equal(tuned[k], source[k]) for k in params)


def test_resume_auto_starts_fresh_or_continues_what_is_there(tmp_path):
    run = tmp_path / "run"
    first = train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1", "train.resume=auto"), run)
    assert first.epochs_run == 1 and first.wall_time_before_s == 0.0  # nothing there: a fresh run
    second = train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1", "train.resume=auto"), run)
    assert [h["epoch"] for h in second.history] == [1, 2] and second.wall_time_before_s > 0  # continued
    weights = load_checkpoint(run / "last.ckpt")["model"]
    third = train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1", "train.resume=auto"), run)
    assert third.best_epoch == second.best_epoch and len(third.history) == 2  # finished: nothing to train
    again = load_checkpoint(run / "last.ckpt")["model"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_resume_auto_refuses_a_folder_trained_with_another_protocol(tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1"), run)
    # a sweep re-launched after its budget changed must not continue the old runs under the new name
    with pytest.raises(CheckpointError, match=r"train.resume=auto: .*last.ckpt was trained with another config: "
                                              r"train.optimizer.lr=0.002 -> 0.001.*train.resume=last"):
        train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1", "train.optimizer.lr=1e-3",
                       "train.resume=auto"), run)
    # asked for by name, it continues and says what differs
    with caplog.at_level("WARNING", logger="pyg_sdfl.engine.training"):
        train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1", "train.optimizer.lr=1e-3",
                       "train.resume=last"), run)
    assert "differs from its own: train.optimizer.lr=0.002 -> 0.001" in caplog.text


def test_init_from_and_init_backbone_from_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="give one"):
        train(tiny_cfg("train.epochs=1", "train.init_from=a.ckpt", "train.init_backbone_from=b.ckpt"), tmp_path)


def test_a_missing_init_from_file_is_a_clear_error_before_any_step(tmp_path):
    with pytest.raises(CheckpointError, match=r"train.init_from=.*missing.pt: no such file \(a relative path is read "
                                              r"from the working folder"):
        train(tiny_cfg("train.epochs=1", f"train.init_from={tmp_path / 'missing.pt'}"), tmp_path / "run")
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_init_backbone_from_takes_the_backbone_of_a_run_with_another_head(tmp_path):
    first = tmp_path / "fc"
    train(tiny_cfg("head=fc", "train.epochs=1", "train.max_steps_per_epoch=2"), first)
    source = load_checkpoint(first / "last.ckpt")["model"]
    # lr 0: the backbone stays where init_backbone_from put it; the SDFL head is a fresh one
    cfg = tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1", "train.optimizer.lr=0",
                   f"train.init_backbone_from={first / 'last.ckpt'}")
    train(cfg, tmp_path / "sdfl")
    tuned = load_checkpoint(tmp_path / "sdfl" / "last.ckpt")["model"]
    fresh = load_checkpoint(_fresh_run(tmp_path))["model"]
    backbone = [k for k in source if k.startswith("backbone.") and "running_" not in k and "num_batches" not in k]
    assert backbone and all(torch.equal(tuned[k], source[k]) for k in backbone)
    assert not any(torch.equal(tuned[k], fresh[k]) for k in backbone if k.endswith("conv1.weight"))
    head = [k for k in tuned if k.startswith("head.") and "running_" not in k and "num_batches" not in k]
    assert head and all(torch.equal(tuned[k], fresh[k]) for k in head)  # the head as a fresh run starts it
    with pytest.raises(CheckpointError, match=r"backbone \(train.init_backbone_from=.*\) does not match"):
        train(tiny_cfg("backbone=mobilenetv2_050", "train.epochs=1",
                       f"train.init_backbone_from={first / 'last.ckpt'}"), tmp_path / "other")
    with pytest.raises(CheckpointError, match="train.init_backbone_from=.*missing.ckpt: no such file"):
        train(tiny_cfg("train.epochs=1", f"train.init_backbone_from={tmp_path / 'missing.ckpt'}"), tmp_path / "none")


def _fresh_run(tmp_path: Path) -> Path:
    """last.ckpt of the same lr-0 run without init_backbone_from."""
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1", "train.optimizer.lr=0"), tmp_path / "fresh")
    return tmp_path / "fresh" / "last.ckpt"


def test_resume_and_init_from_read_checkpoints_onto_the_cpu(tmp_path, monkeypatch):
    # On CUDA, map_location=cuda put the saved RNG states on the GPU and resume failed converting them
    # to NumPy (seen on an H200); both readers must load onto the CPU whatever the run's device.
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1"), tmp_path)
    seen = []
    real = training_module.load_checkpoint

    def recording(path, map_location="cpu"):
        seen.append(str(map_location))
        return real(path, map_location=map_location)

    monkeypatch.setattr(training_module, "load_checkpoint", recording)
    train(tiny_cfg("train.epochs=2", "train.max_steps_per_epoch=1", "train.resume=last"), tmp_path)
    train(tiny_cfg("train.epochs=1", "train.max_steps_per_epoch=1", f"train.init_from={tmp_path / 'last.ckpt'}"),
          tmp_path / "tuned")
    assert seen and set(seen) == {"cpu"}


def _train_both_ways(runs: Path, base: list, switch: str, caplog, logger: str, logged: str) -> tuple[float, float]:
    """Train ``base`` as it is, with ``switch`` (checking that ``logger`` said ``logged``) and at lr 0;
    returns how far the first run's weights moved from the untrained ones, and how far the switched
    run's weights are from the first's (max abs over the parameters; BN running statistics left out)."""
    train(tiny_cfg(*base), runs / "reference")
    with caplog.at_level("INFO", logger=logger):
        train(tiny_cfg(*base, switch), runs / "switched")
    assert logged in caplog.text

    train(tiny_cfg(*base, "train.optimizer.lr=0"), runs / "untrained")

    def weights(run):
        model = load_checkpoint(runs / run / "last.ckpt")["model"]
        return {k: v for k, v in model.items() if v.is_floating_point() and "running_" not in k}

    a, b, start = weights("reference"), weights("switched"), weights("untrained")
    return (max(float((a[k] - start[k]).abs().max()) for k in a), max(float((a[k] - b[k]).abs().max()) for k in a))


def test_the_fused_graph_backend_trains_the_same_weights_as_pyg(tmp_path, caplog):
    # the dynamic and the binary SDFL head, 2 epochs x 3 steps, fp32, plain SGD at a small lr (as the DDP
    # test: Adam would scale the ~1e-9 gradient noise of the biases that batch norm cancels up to full steps).
    # The two paths' gradients differ by float rounding only (~1e-6 relative), but an untrained model at
    # lr 1e-4 multiplies a weight difference by ~30 per step (measured: 4e-9, 1e-7, 4e-6 after steps 1-3,
    # 1.6e-4 after 6, on an Intel AMX VM): at lr 1e-5 the 6 steps move the weights by ~9e-4 and the paths
    # stay ~8e-8 apart, so the bound is relative to the movement and far from both.
    for variant in ("paper", "binary_adjacency"):
        base = ["train.epochs=2", "train.max_steps_per_epoch=3", f"variant={variant}",
                "train.optimizer._target_=torch.optim.SGD", "train.optimizer.lr=1e-5", "train.eval_untrained=false"]
        moved, apart = _train_both_ways(tmp_path / variant, base, "train.graph_backend=fused", caplog,
                                        "pyg_sdfl.engine.training",
                                        "train.graph_backend=fused: 1 SDFL head(s) on the fused path")
        assert moved > 1e-4, variant  # not a vacuous agreement: the 6 steps moved the weights
        assert apart < 1e-3 * moved, (variant, apart, moved)


def test_an_unknown_graph_backend_is_refused_and_other_heads_are_told(tmp_path, caplog):
    with pytest.raises(ConfigError, match=r"train.graph_backend.*expected one of pyg, fused"):
        train(tiny_cfg("train.epochs=1", "train.graph_backend=dense"), tmp_path / "bad")
    from pyg_sdfl.config import KEY_TYPES
    from pyg_sdfl.nn.heads import GRAPH_BACKENDS
    assert KEY_TYPES["train.graph_backend"].choices == GRAPH_BACKENDS
    with caplog.at_level("WARNING", logger="pyg_sdfl.engine.training"):
        train(tiny_cfg("head=fc", "train.epochs=1", "train.max_steps_per_epoch=1", "train.graph_backend=fused"),
              tmp_path / "fc")
    assert "train.graph_backend=fused has no effect: the model has no SDFL head" in caplog.text


def test_device_crops_train_as_the_loader_crops(tmp_path, caplog):
    # train.crops=device: the same batches, draws and landmarks as the DataLoader path, the pixels
    # resampled from an image bank (a few grey levels apart where OpenCV rounds). After 2 SGD steps the
    # two runs' weights are 1.4% of the steps' movement apart; crops a quarter pixel off (a sampler's
    # classic error) put them 17% apart (measured on the AMD VM), so the bound sits between the two.
    # A run may switch between the two paths when it resumes.
    base = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.optimizer._target_=torch.optim.SGD",
            "train.optimizer.lr=1e-5", "train.eval_untrained=false"]
    moved, apart = _train_both_ways(tmp_path, base, "train.crops=device", caplog, "pyg_sdfl.data.device_crops",
                                    "image bank:")
    assert moved > 1e-4 and apart < 0.05 * moved, (apart, moved)
    # train.resume=auto refuses a run under another protocol: train.crops is not one
    resumed = train(tiny_cfg(*base[1:], "train.epochs=2", "train.resume=auto"), tmp_path / "switched")
    assert resumed.epochs_run == 2


def test_an_unknown_crops_setting_is_refused():
    from pyg_sdfl.config import KEY_TYPES
    assert KEY_TYPES["train.crops"].choices == training_module.TRAIN_CROPS
    with pytest.raises(ConfigError, match=r"train.crops.*expected one of loader, device"):
        train(tiny_cfg("train.epochs=1", "train.crops=gpu"), Path("unused"))
