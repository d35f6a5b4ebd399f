"""Packaging metadata that setuptools will stop accepting, and the public API listed in one place."""
import tomllib
from pathlib import Path

import initlab

ROOT = Path(__file__).parent.parent


def test_license_is_an_spdx_string():
    """`license = {text = ...}` is deprecated (setuptools refuses it from 2027-02-18); PEP 639 wants SPDX."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


def test_public_api_is_listed_once_and_importable():
    assert len(initlab.__all__) == len(set(initlab.__all__))
    for name in initlab.__all__:
        assert hasattr(initlab, name), name
    assert callable(initlab.audit) and callable(initlab.probe) and callable(initlab.compare)
