"""The package's import layering, checked on the source (every import, also those inside functions).

Layers, lowest first; a module may import from its own layer or a lower one, never a higher one:

    0  config, schemes, geometry, resampling,        conventions, shipped files, reading JSON,
       json_files, _compat, weights                    image halving
    1  data, graph, metrics, losses, detection,        files -> samples -> crops; graphs; scores;
       peers, plotting                                 face detectors; the dlib comparison model; figures
    2  nn                                              modules: tensors in, tensors out
    3  engine                                          builders, training, evaluation, checkpoints, export
    4  inference, tracking, studies, image_folder,     Landmarker and its tracker; graph/probe/occlusion/
       video, calibration_faces                        comparison studies; folders of images and video files;
                                                       int8 calibration faces from photos
    5  experiment                                      the Hydra entry point
    6  cli                                             nothing imports it

and no module imports another module's private (``_``-prefixed) name, in the package, the
benchmarks, the experiments or the tests.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyg_sdfl"

LAYERS: Dict[str, int] = {
    "config": 0, "schemes": 0, "geometry": 0, "resampling": 0, "json_files": 0, "_compat": 0, "weights": 0,
    "configs": 0,
    "data": 1, "graph": 1, "metrics": 1, "losses": 1, "detection": 1, "peers": 1, "plotting": 1,
    "nn": 2,
    "engine": 3,
    "inference": 4, "tracking": 4, "studies": 4, "image_folder": 4, "video": 4, "calibration_faces": 4,
    "experiment": 5,
    "cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> Optional[str]:
    """``pyg_sdfl.engine.training`` -> ``engine``; the package root itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pyg_sdfl" else None


def _imports(path: Path) -> Iterator[Tuple[int, str, List[str]]]:
    """``(line, imported module, names)`` of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base, [a.name for a in node.names]


def _sources(*folders: str) -> List[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if ".ipynb_checkpoints" not in p.parts)


def test_every_package_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units <= set(LAYERS), f"give these a layer in tests/test_layering.py: {sorted(units - set(LAYERS))}"


def test_no_module_imports_from_a_higher_layer():
    violations = []
    for path in _sources("pyg_sdfl"):
        own = _unit(_module_name(path))
        if own not in LAYERS:  # the package root, or a unit test_every_package_unit_has_a_layer reports
            continue
        for line, module, names in _imports(path):
            targets = [module] if _unit(module) else [f"pyg_sdfl.{n}" for n in names] if module == "pyg_sdfl" else []
            for target in targets:
                unit = _unit(target)
                if unit in LAYERS and LAYERS[unit] > LAYERS[own]:
                    violations.append(f"{path.relative_to(ROOT)}:{line} ({own}, layer {LAYERS[own]}) imports "
                                      f"{target} ({unit}, layer {LAYERS[unit]})")
    assert not violations, "\n".join(violations)


def test_nothing_imports_the_cli():
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in _sources("pyg_sdfl", "benchmarks", "experiments")
                 for line, module, names in _imports(p)
                 if _module_name(p) != "pyg_sdfl.cli" and (module == "pyg_sdfl.cli" or
                                                           (module == "pyg_sdfl" and "cli" in names))]
    assert not offenders, offenders


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _sources("pyg_sdfl", "benchmarks", "experiments", "tests"):
        for line, module, names in _imports(path):
            if not module.startswith("pyg_sdfl") or module == _module_name(path):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {module}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("source, expected", [
    ("from pyg_sdfl.engine.training import train\n", "imports pyg_sdfl.engine.training"),
    ("def f():\n    from pyg_sdfl.studies import paths\n", "imports pyg_sdfl.studies"),
    ("from ..inference import Landmarker\n", "imports pyg_sdfl.inference"),
])
def test_the_checker_sees_direct_lazy_and_relative_imports(source, expected, tmp_path, monkeypatch):
    """The checks above can fail: a data module importing upwards is caught, however it imports."""
    fake_root = tmp_path / "repo"
    module = fake_root / "pyg_sdfl" / "data" / "bad.py"
    module.parent.mkdir(parents=True)
    (fake_root / "pyg_sdfl" / "__init__.py").write_text("")
    (module.parent / "__init__.py").write_text("")
    module.write_text(source)
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root, raising=False)
    globals()["ROOT"] = fake_root
    try:
        with pytest.raises(AssertionError, match=expected.replace(".", r"\.")):
            test_no_module_imports_from_a_higher_layer()
    finally:
        globals()["ROOT"] = Path(__file__).resolve().parents[1]
