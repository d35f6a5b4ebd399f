"""``--model module:factory`` loading: working-directory modules never shadow installed packages."""
from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

from initlab.models import user as user_models
from initlab.analysis.diagnostics import build_user_model, load_factory

FACTORY = "import torch.nn as nn\ndef make():\n    return nn.Linear(4, 3)\n"


@pytest.fixture(autouse=True)
def clean_imports(monkeypatch, tmp_path):
    """Each test gets its own sys.path copy, loses the modules it imported, and starts in tmp_path."""
    cwd = os.getcwd()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", cwd, str(tmp_path))])
    monkeypatch.setattr(user_models, "_CWD_MODULES", {})
    monkeypatch.setattr(user_models, "_APPENDED_PATH", [])
    before = set(sys.modules)
    monkeypatch.chdir(tmp_path)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    importlib.invalidate_caches()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def bomb(name: str) -> str:
    return f"raise ImportError('the working directory {name}.py was imported')\n"


@pytest.mark.parametrize("shadow", ["sklearn", "numpy", "torch", "json", "pandas", "initlab"])
def test_working_directory_file_does_not_shadow_installed_package(tmp_path, shadow):
    write(tmp_path / f"{shadow}.py", bomb(shadow))
    write(tmp_path / "helpers_lf.py", "WIDTH = 5\n")
    write(tmp_path / "mymodels_lf.py", f"""
        import {shadow}
        import torch.nn as nn
        from helpers_lf import WIDTH  # sibling import from the working directory
        def make():
            return nn.Linear(4, WIDTH)
    """)
    model = load_factory("mymodels_lf:make")()
    assert isinstance(model, nn.Linear) and model.out_features == 5
    assert sys.path[-1] == str(tmp_path) and str(tmp_path) not in sys.path[:-1]  # appended, never first
    spec = importlib.machinery.PathFinder.find_spec(shadow)  # what a fresh `import` would find
    assert spec is not None and not spec.origin.startswith(str(tmp_path))
    assert not getattr(sys.modules[shadow], "__file__", "").startswith(str(tmp_path))


def test_working_directory_sklearn_py_does_not_break_a_fresh_process(tmp_path):
    """End to end in a clean interpreter (before the fix, cwd went to sys.path[0])."""
    write(tmp_path / "sklearn.py", bomb("sklearn"))
    write(tmp_path / "numpy.py", bomb("numpy"))
    write(tmp_path / "mymodels_lf.py", FACTORY)
    code = ("from initlab.analysis.diagnostics import load_factory; load_factory('mymodels_lf:make')(); "
            "import sklearn, numpy; from initlab import load_dataset; "
            "print(load_dataset('digits').x_train.shape[1])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    r = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "64"


@pytest.mark.parametrize("name", ["sklearn", "numpy", "torch", "json", "os", "initlab"])
@pytest.mark.parametrize("layout", ["module", "package"])
def test_module_named_like_installed_package_is_an_error_not_a_guess(tmp_path, name, layout):
    real = importlib.import_module(name)
    path = tmp_path / (f"{name}.py" if layout == "module" else f"{name}/__init__.py")
    write(path, FACTORY)
    with pytest.raises(ValueError) as info:
        load_factory(f"{name}:make")
    msg = str(info.value)
    assert f"--model module {name!r} is both {path}" in msg and "rename" in msg and "\n" not in msg
    assert sys.modules[name] is real


def test_module_installed_but_not_yet_imported_is_an_error(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write(site / "lf_installed_pkg" / "__init__.py", "def make():\n    return 'installed'\n")
    monkeypatch.syspath_prepend(str(site))
    work = tmp_path / "work"
    write(work / "lf_installed_pkg.py", FACTORY)
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match=r"is both .*lf_installed_pkg\.py in the working directory and "
                                         r".*site/lf_installed_pkg/__init__\.py; rename"):
        load_factory("lf_installed_pkg:make")
    assert "lf_installed_pkg" not in sys.modules


def test_module_imported_earlier_from_elsewhere_is_an_error(tmp_path, monkeypatch):
    other = tmp_path / "other"
    write(other / "lf_twice.py", FACTORY)
    monkeypatch.syspath_prepend(str(other))
    import lf_twice  # noqa: F401  (a normal import from another folder)

    work = tmp_path / "work"
    write(work / "lf_twice.py", FACTORY)
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="is both .* rename"):
        load_factory("lf_twice:make")


@pytest.mark.parametrize("entry", ["", "cwd"])
def test_working_directory_already_on_sys_path_is_not_a_conflict(tmp_path, monkeypatch, entry):
    """`python -m ...` or an interactive session put the working directory (or '') first."""
    write(tmp_path / "lf_mine.py", FACTORY)
    monkeypatch.setattr(sys, "path", [str(tmp_path) if entry == "cwd" else "", *sys.path])
    assert isinstance(load_factory("lf_mine:make")(), nn.Linear)


def test_package_in_working_directory_with_submodules(tmp_path):
    write(tmp_path / "lf_pkg" / "__init__.py", "")
    write(tmp_path / "lf_pkg" / "blocks.py", "WIDTH = 7\n")
    write(tmp_path / "lf_pkg" / "nets.py", "import torch.nn as nn\nfrom .blocks import WIDTH\n"
                                           "def make():\n    return nn.Linear(2, WIDTH)\n")
    assert load_factory("lf_pkg.nets:make")().out_features == 7
    assert sys.modules["lf_pkg"].__file__ == str(tmp_path / "lf_pkg" / "__init__.py")


def test_loaded_once_then_cached(tmp_path):
    write(tmp_path / "lf_cached.py", FACTORY)
    first = load_factory("lf_cached:make")
    assert load_factory("lf_cached:make") is first


def test_same_name_from_another_working_directory_is_reloaded(tmp_path, monkeypatch):
    for i, width in enumerate((3, 9)):
        folder = tmp_path / f"w{i}"
        write(folder / "lf_models.py", f"import torch.nn as nn\ndef make():\n    return nn.Linear(1, {width})\n")
        monkeypatch.chdir(folder)
        assert load_factory("lf_models:make")().out_features == width


@pytest.mark.parametrize("body, error", [
    ("raise RuntimeError('boom')", "RuntimeError: boom"),
    ("raise ValueError('bad config')", "ValueError: bad config"),
    ("import lf_no_such_dependency", "ModuleNotFoundError: No module named 'lf_no_such_dependency'"),
    ("raise SystemExit(3)", "SystemExit: 3"),
    ("def make(:\n    pass", "SyntaxError"),
])
def test_module_failing_on_import_is_one_line_and_not_left_half_imported(tmp_path, body, error):
    write(tmp_path / "lf_broken.py", body + "\n")
    with pytest.raises(ValueError) as info:
        load_factory("lf_broken:make")
    assert str(info.value).startswith("cannot import module 'lf_broken' for --model: ") and error in str(info.value)
    assert "\n" not in str(info.value)
    assert "lf_broken" not in sys.modules
    write(tmp_path / "lf_broken.py", FACTORY)  # fixed: loads now
    importlib.invalidate_caches()
    assert isinstance(load_factory("lf_broken:make")(), nn.Linear)


@pytest.mark.parametrize("spec", [None, 3, "", "x", "x:", ":f", "a:b:c", "my-mod:f", "../x:f", "x/y:f", "1x:f",
                                  "x:f.g", "x:1f", "x..y:f", ".x:f"])
def test_bad_spec_says_what_it_must_look_like(spec):
    with pytest.raises(ValueError, match="--model must look like 'module:factory'"):
        load_factory(spec)


@pytest.mark.parametrize("body, error", [
    ("def make():\n    raise SystemExit(1)", "raised SystemExit: 1"),
    ("def make():\n    raise KeyError('k')", "raised KeyError"),
    ("def make():\n    return 42", "returned int, not an nn.Module"),
])
def test_build_user_model_errors_are_one_line(tmp_path, body, error):
    write(tmp_path / "lf_factories.py", body + "\n")
    with pytest.raises(ValueError, match=error):
        build_user_model("lf_factories:make")
