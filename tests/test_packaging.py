"""The install files agree with each other: requirements.txt, pyproject.toml, environment.yml."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(;.*)?", line)
        assert m, f"unpinned requirement: {line!r}"
        pins[m.group(1).lower().replace("_", "-")] = (m.group(2), (m.group(3) or "").replace(" ", ""))
    return pins


def test_environment_yml_matches_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip_section) == req


def test_pyproject_matches_requirements():
    import tomllib

    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _pins(project["dependencies"]) == req


def test_constraints_keep_cpu_torch():
    text = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0\+cpu$", text, re.M)


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"<!-- test-command -->\s*```(?:bash)?\n(.+?)\n```", readme, re.S).group(1).strip()
    install_cmd = re.search(r"<!-- install-command -->\s*```(?:bash)?\n(.+?)\n```", readme, re.S).group(1).strip()
    assert test_cmd.split("&&")[-1].strip() in ci
    pip_part = next(p.strip() for p in install_cmd.split("&&") if p.strip().startswith("pip install"))
    assert pip_part in ci


def test_the_default_detector_is_installed_where_its_wheel_exists():
    """yuface is a dependency on CPython 3.11 x86-64 Linux (its only wheel): there the default detector's tests
    must run, not skip, and the Landmarker must not fall back to Haar."""
    import importlib.util
    import platform
    import sys

    import pytest

    if not (sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64" and sys.platform == "linux"):
        pytest.skip("the yuface wheel exists for CPython 3.11 on x86-64 Linux only")
    assert importlib.util.find_spec("yuface") is not None, "pip install -e . should have installed yuface"
    from pyg_sdfl.inference import default_detector_name

    assert default_detector_name() == "yuface"
