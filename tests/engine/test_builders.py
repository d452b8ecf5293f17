"""engine.builders: data errors reach the user as the reader's own one-line message; splits are read on demand."""
from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from pyg_sdfl.config import compose
from pyg_sdfl.engine.builders import build_datasets, instantiate_node, load_splits

SMALL = ["dataset.image_size=64", "dataset.train.num_faces=20", "dataset.test.num_faces=4", "dataset.val_fraction=0.2"]


def test_a_missing_dataset_folder_is_the_readers_error_not_hydras(tmp_path):
    """Training and evaluation both read data through load_splits: one clear line, no InstantiationException."""
    cfg = compose(["dataset=300w", f"dataset.root={tmp_path / 'nowhere'}"])
    with pytest.raises(ValueError) as info:
        load_splits(cfg.dataset)
    assert not isinstance(info.value, InstantiationException)
    assert str(info.value) == f"dataset '300w': root folder {tmp_path / 'nowhere'} not found (check dataset.root / --root)"


def test_an_unset_dataset_root_names_the_key():
    with pytest.raises(ValueError, match=r"dataset '300w' needs its folder: set dataset.root=DIR"):
        load_splits(compose(["dataset=300w"]).dataset)


def test_a_target_that_does_not_import_is_one_line_naming_the_key():
    node = OmegaConf.create({"_target_": "pyg_sdfl.nn.heads.NoSuchHead"})
    with pytest.raises(ValueError, match=r"^cannot build head \(pyg_sdfl.nn.heads.NoSuchHead\): ") as info:
        instantiate_node(node, "head")
    assert "\n" not in str(info.value)


def test_a_class_rejecting_its_argument_keeps_its_own_error():
    node = OmegaConf.create({"_target_": "pyg_sdfl.data.synthetic.SyntheticFaces", "num_faces": -1})
    with pytest.raises(ValueError, match="^num_faces must be a non-negative int"):
        instantiate_node(node, "dataset.train")


def test_the_test_split_alone_reads_no_training_set():
    cfg = compose(SMALL)
    splits = load_splits(cfg.dataset, need_train=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (0, 0, 4)
    assert set(build_datasets(cfg, splits)) == {"test"}
    full = load_splits(cfg.dataset)
    assert (len(full.train), len(full.val), len(full.test)) == (16, 4, 4)


def test_training_faces_are_augmented_for_training_and_plain_for_scoring():
    cfg = compose(SMALL)
    splits = load_splits(cfg.dataset, need_test=False)
    assert build_datasets(cfg, splits)["train"].augment is not None
    plain = build_datasets(cfg, splits, augment_train=False)
    assert plain["train"].augment is None and plain["val"].augment is None
