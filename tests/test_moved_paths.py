"""The old top-level module paths keep working for one release, each with a
``DeprecationWarning`` that names the new path (:mod:`mce.support.moved`)."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import warnings

import pytest

import mce
from mce.support.moved import MOVED, MovedModule
from mce.training.config import HyperParameters


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_gives_the_new_module_names_and_warns(old: str, new: str) -> None:
    module = importlib.import_module(new)
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    name = sorted(public)[0]
    shim = importlib.import_module(old)
    assert isinstance(shim, MovedModule)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        assert getattr(shim, name) is getattr(module, name)


def test_from_import_and_dotted_access_work_on_old_paths() -> None:
    with pytest.warns(DeprecationWarning, match="mce.science.shapley"):
        from mce.shapley import shapley_values
    assert shapley_values is mce.shapley_values
    from mce import data

    with pytest.warns(DeprecationWarning, match="mce.support.grid"):
        assert data.grid.Grid3D().cells == 200


def test_the_run_function_keeps_its_name() -> None:
    import mce.run  # the old module path of the run

    assert callable(mce.run) and mce.run is importlib.import_module("mce.training.run").run
    with pytest.warns(DeprecationWarning, match="mce.training.run"):
        from mce.run import config_for
    assert config_for is mce.config_for


def test_an_object_pickled_under_an_old_path_loads() -> None:
    saved = pickle.dumps(HyperParameters(epochs=3), protocol=0)
    assert b"mce.training.config" in saved
    old = saved.replace(b"mce.training.config", b"mce.config")
    with pytest.warns(DeprecationWarning, match="mce.config moved to mce.training.config"):
        assert pickle.loads(old) == HyperParameters(epochs=3)


def test_module_scans_pass_the_old_paths_quietly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, module in list(sys.modules.items()):
            if isinstance(module, MovedModule):
                assert not hasattr(module, "__file__"), name
                assert dir(module)


def test_patching_an_old_path_patches_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    config = importlib.import_module("mce.training.config")
    with pytest.warns(DeprecationWarning, match="mce.training.config"):
        monkeypatch.setattr("mce.config.HyperParameters", int)
    assert config.HyperParameters is int
    with pytest.warns(DeprecationWarning):
        monkeypatch.undo()
    assert config.HyperParameters is HyperParameters and "HyperParameters" not in vars(
        sys.modules["mce.config"]
    )


def test_a_star_import_from_an_old_path_gives_the_public_names() -> None:
    names: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match="mce.science.shapley"):
        exec("from mce.shapley import *", names)
    assert names["shapley_values"] is mce.shapley_values


def test_an_old_path_has_a_spec() -> None:
    spec = importlib.util.find_spec("mce.shapley")
    assert spec is not None and spec.name == "mce.shapley"
