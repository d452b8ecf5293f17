"""The detector registry: one YAML per detector (pyg_sdfl/configs/detector), built by name with Hydra."""
from __future__ import annotations

import inspect
import json
import shutil
import sys
import textwrap

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException

from pyg_sdfl import config
from pyg_sdfl.config import CONFIG_DIR, ConfigError, compose
from pyg_sdfl.detection import (
    HaarFaceDetector,
    available_detectors,
    create_detector,
    default_box_mapping_path,
    detector_config,
    detector_from_record,
    detector_parameters,
    installed_detectors,
)
from pyg_sdfl.detection.registry import override_value

EXTRA_MARK = 'pip install ".['
YAML_DIR = CONFIG_DIR / "detector"


def _target_class(name: str):
    module, _, attr = str(detector_config(name)["_target_"]).rpartition(".")
    return getattr(pytest.importorskip(module, reason=f"the module of detector {name!r} does not import"), attr)


# ----------------------------------------------------------------------------- the YAML files
def test_available_detectors_are_the_yaml_files_sorted():
    names = available_detectors()
    assert names == sorted(p.stem for p in YAML_DIR.glob("*.yaml"))
    assert {"haar", "yuface", "dlib"} <= set(names)


@pytest.mark.parametrize("name", available_detectors())
def test_each_yaml_declares_its_class_and_every_constructor_parameter_with_its_default(name):
    text = (YAML_DIR / f"{name}.yaml").read_text()
    keys = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert keys[0].startswith("_target_:"), f"{name}.yaml: _target_ comes first"
    assert all("#" in line for line in keys[1:]), f"{name}.yaml: every parameter has a comment"
    signature = inspect.signature(_target_class(name).__init__)
    defaults = {k: p.default for k, p in signature.parameters.items() if k != "self"}
    declared = detector_parameters(name)
    assert declared == {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()}
    assert declared == {k: v for k, v in yaml.safe_load(text).items() if k != "_target_"}


def test_the_detection_config_is_apart_from_the_training_config():
    assert "detector" not in compose()
    assert str(compose(config_name="detection").detector["_target_"]).endswith("YuFaceDetector")
    from pyg_sdfl.detection.registry import default_detector

    assert default_detector() == "yuface"  # the default of configs/detection.yaml, chosen in docs/predict.md
    node = detector_config("yuface", score_threshold=0.6, max_side=640)
    assert node == compose(["detector=yuface", "detector.score_threshold=0.6", "detector.max_side=640"],
                           config_name="detection").detector
    assert node.score_threshold == 0.6 and node.min_size == 0


# ----------------------------------------------------------------------------- building by name
@pytest.mark.parametrize("name", available_detectors())
def test_every_registered_detector_is_created_or_names_its_extra(name):
    try:
        detector = create_detector(name)
    except ImportError as err:
        assert EXTRA_MARK in str(err) and "\n" not in str(err), str(err)
        return
    assert type(detector) is _target_class(name) and detector.name == name
    assert detector.params == detector_parameters(name)


def test_installed_detectors_are_those_that_build():
    def builds(name: str) -> bool:
        try:
            create_detector(name)
        except ImportError:
            return False
        return True

    installed = installed_detectors()
    assert "haar" in installed  # OpenCV is a core dependency
    assert installed == [name for name in available_detectors() if builds(name)]


def test_parameters_reach_the_detector():
    detector = create_detector("haar", min_neighbors=3, scale_factor=1.2)
    assert isinstance(detector, HaarFaceDetector)
    assert detector.params == {**detector_parameters("haar"), "min_neighbors": 3, "scale_factor": 1.2}


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown detector 'nosuch'; the registered detectors are: .*haar.*yuface"):
        create_detector("nosuch")
    with pytest.raises(ValueError, match="unknown detector"):
        detector_config(None)


def test_an_unknown_parameter_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"^detector 'haar' has no parameter 'conf'; it takes: scale_factor, "
                                         r"min_neighbors, min_size, max_side, cascade$"):
        create_detector("haar", conf=0.5)
    with pytest.raises(ValueError, match="'_target_'"):
        detector_config("haar", _target_="os.system")


def test_bad_values_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"detector.min_size=2.5: expected an integer"):
        create_detector("haar", min_size=2.5)
    with pytest.raises(ConfigError, match=r"detector.scale_factor=null"):
        create_detector("haar", scale_factor=None)
    with pytest.raises(ValueError, match=r"^scale_factor must be > 1") as info:  # the class's own check
        create_detector("haar", scale_factor=1.0)
    assert not isinstance(info.value, InstantiationException)


@pytest.mark.parametrize("name, module, extra", [("yuface", "yuface", "yuface"), ("dlib", "dlib", "peers")])
def test_a_missing_package_is_an_import_error_naming_the_extra(name, module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(ImportError, match=rf'pip install "\.\[{extra}\]"') as info:
        create_detector(name)
    assert not isinstance(info.value, InstantiationException) and "\n" not in str(info.value)
    assert name not in installed_detectors() and "haar" in installed_detectors()


@pytest.fixture
def extra_config_dir(tmp_path, monkeypatch):
    """A copy of the packaged configs with two more detector YAMLs: one whose module is not in the
    installation, one whose module fails on an import of its own."""
    root = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, root)
    (root / "detector" / "ghost.yaml").write_text("_target_: pyg_sdfl.detection.ghost.GhostDetector\nsize: 1  # a size\n")
    (root / "detector" / "broken.yaml").write_text("_target_: brokenpkg.detector.BrokenDetector\n")
    package = tmp_path / "src" / "brokenpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "detector.py").write_text(textwrap.dedent("""
        import no_such_dependency_pyg_sdfl  # noqa: F401
        class BrokenDetector:
            name = "broken"
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setattr(config, "CONFIG_DIR", root)
    return root


def test_a_registered_detector_whose_module_is_missing(extra_config_dir):
    assert {"ghost", "broken"} <= set(available_detectors())
    assert detector_parameters("ghost") == {"size": 1}
    with pytest.raises(ImportError, match=r"^detector 'ghost': configs/detector/ghost.yaml names "
                                          r"pyg_sdfl.detection.ghost.GhostDetector, but module "
                                          r"pyg_sdfl.detection.ghost is not in this installation$"):
        create_detector("ghost", size=2)
    with pytest.raises(ImportError, match=r"^detector 'broken' \(brokenpkg.detector.BrokenDetector\) cannot be "
                                          r"imported: No module named 'no_such_dependency_pyg_sdfl'$"):
        create_detector("broken")
    installed = installed_detectors()
    assert "ghost" not in installed and "broken" not in installed and "haar" in installed


# ----------------------------------------------------------------------------- records
def test_the_shipped_haar_record_has_no_name_and_rebuilds_the_haar_detector():
    if not default_box_mapping_path().is_file():
        pytest.skip("pyg_sdfl/weights/haar_box_mapping.json is absent")
    record = json.loads(default_box_mapping_path().read_text())["detector"]
    assert "name" not in record
    detector = detector_from_record(record)
    assert isinstance(detector, HaarFaceDetector)
    assert detector.params == HaarFaceDetector.from_params(record).params == record


@pytest.mark.parametrize("name", available_detectors())
def test_record_round_trip(name):
    try:
        detector = create_detector(name)
    except ImportError as err:
        pytest.skip(f"detector {name!r} is not installed: {err}")
    record = json.loads(json.dumps({"name": detector.name, **detector.params}))
    again = detector_from_record(record)
    assert type(again) is type(detector) and again.params == detector.params


def test_bad_records():
    with pytest.raises(ValueError, match="mapping"):
        detector_from_record([("name", "haar")])
    with pytest.raises(ValueError, match="unknown detector 'nosuch'"):
        detector_from_record({"name": "nosuch"})
    with pytest.raises(ValueError, match="has no parameter 'upsample'"):
        detector_from_record({"upsample": 1})  # no name: a Haar record, which has no upsample


# ----------------------------------------------------------------------------- override values
@pytest.mark.parametrize("value", [None, True, False, 0, -3, 0.5, -0.25, 1e-05, 1.1, float("inf"), "", "cpu",
                                   "cuda:0", "it's", "a\\", "a\\'b", "back\\slash", "x=y, [1] {a: b}", "1",
                                   [0.6, 0.7, 0.7], ["a", "b'c"]])
def test_override_values_parse_back_to_themselves(value):
    parsed = OverridesParser.create().parse_override(f"a.b={override_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_override_values_refuse_interpolations_and_other_types():
    with pytest.raises(ValueError, match="interpolation"):
        override_value("${oc.env:HOME}")
    with pytest.raises(ValueError, match="dict"):
        override_value({"a": 1})
