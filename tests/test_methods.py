"""Methods from plain callables and tensors (no task), and the registry of methods by name."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from oracles import random_present
from torch import nn

from mce.data.dataset import Batch
from mce.methods import (
    METHODS,
    BaselineMethod,
    MCEConfig,
    MCEMethod,
    MethodInputs,
    MethodSpec,
    StepResult,
    get_method,
    register_method,
)
from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel

NUM_SAMPLES, DIM = 11, 4
_METHODS_DIR = Path(importlib.util.find_spec("mce.methods").origin).parent


def _regression_setup(seed: int):
    """A two-modality linear regressor, a squared-error loss and a utility in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    modalities = ("left", "right")
    model = MultimodalModel(
        modalities,
        encoders={name: nn.Linear(3, DIM) for name in modalities},
        heads={name: nn.Linear(DIM, 1) for name in modalities},
        fusion=ConcatFusion(2, DIM),
        decoder=nn.Linear(2 * DIM, 1),
        reconstruction=None,
        dim=DIM,
    )
    present = random_present(generator, NUM_SAMPLES, 2)
    inputs = {name: torch.randn(NUM_SAMPLES, 3, generator=generator) for name in modalities}
    batch = Batch(inputs, torch.randn(NUM_SAMPLES, generator=generator), present, torch.arange(11))

    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (outputs.squeeze(-1) - target) ** 2

    def utility(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.exp(-loss(outputs, target))

    upper = torch.rand(20, 2, generator=generator)
    inputs = MethodInputs(loss, utility, torch.tensor([12, 15]), 20, seed, upper)
    return model, batch, inputs


def test_methods_run_from_plain_callables_and_tensors(seed):
    model, batch, inputs = _regression_setup(seed)
    baseline = BaselineMethod(inputs).step(model, batch, 0)
    expected = inputs.loss(model(batch.inputs, batch.present), batch.target).mean()
    torch.testing.assert_close(baseline.loss, expected)
    result = MCEMethod(inputs, MCEConfig()).step(model, batch, 0)
    assert isinstance(result, StepResult) and torch.isfinite(result.loss)
    assert result.logs["l_task"] == pytest.approx(baseline.logs["l_task"], rel=1e-6)
    result.loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_method_inputs_are_checked(seed):
    _, _, inputs = _regression_setup(seed)
    with pytest.raises(ValueError, match="counts must be Tensor\\[M\\] int64"):
        dataclasses.replace(inputs, counts=torch.tensor([12.0, 15.0]))
    with pytest.raises(ValueError, match="dataset_size must be a positive int"):
        dataclasses.replace(inputs, dataset_size=0)
    with pytest.raises(ValueError, match=r"upper must have shape \[N_train, M\] = \[20, 2\]"):
        dataclasses.replace(inputs, upper=torch.zeros(20, 3))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # an attribute of a plain module: "mce.nn.model.full_rows"
        return False


def _mce_imports(module: str) -> set[str]:
    """The mce modules that ``module``'s own source imports."""
    origin = Path(importlib.util.find_spec(module).origin)
    if origin.suffix != ".py":  # compiled kernels import nothing of mce
        return set()
    found = set()
    for node in ast.walk(ast.parse(origin.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: mce uses absolute imports only"
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    modules = {name for name in found if name.startswith("mce.") and _is_module(name)}
    parents = {name.rsplit(".", k)[0] for name in modules for k in range(1, name.count("."))}
    return modules | parents  # importing mce.data.dataset runs mce/data/__init__ too


def test_methods_do_not_import_tasks():
    # Every module that mce.methods reaches by its own imports (the package root mce/__init__,
    # which re-exports everything, aside): none is a task recipe, the trainer or its config.
    seen, todo = (
        set(),
        ["mce.methods", *(f"mce.methods.{m.stem}" for m in _METHODS_DIR.glob("*.py"))],
    )
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_mce_imports(module) - seen)
    assert "mce.methods.official" in seen and "mce.science.rce" in seen
    assert not {m for m in seen if m.startswith(("mce.tasks", "mce.train", "mce.training.config"))}


def test_builtin_methods_are_registered(seed):
    assert list(METHODS)[:6] == ["mce", "baseline", "redcore", "mbt-sample", "pmr", "passion"]
    model, batch, inputs = _regression_setup(seed)
    mce_spec, baseline_spec = get_method("mce"), get_method("baseline")
    assert mce_spec.options is MCEConfig and baseline_spec.options is None
    assert mce_spec.needs_upper_bounds(MCEConfig()) and mce_spec.needs_upper_bounds(None)
    assert not mce_spec.needs_upper_bounds(MCEConfig(use_b=False))
    assert not baseline_spec.needs_upper_bounds(None)
    built = mce_spec.build(inputs, MCEConfig(lambda_sub=2.0))
    assert isinstance(built, MCEMethod) and built.config.lambda_sub == 2.0
    assert isinstance(mce_spec.build(inputs, None), MCEMethod)
    assert isinstance(baseline_spec.build(inputs, None), BaselineMethod)
    with pytest.raises(TypeError, match="mce options must be an MCEConfig"):
        mce_spec.build(inputs, {"lambda_sub": 2.0})


def test_unknown_method_names_the_known_ones():
    known = "known methods: " + ", ".join(sorted(METHODS))
    assert {"baseline", "mce", "redcore", "mbt-sample", "pmr", "passion"} <= set(METHODS)
    with pytest.raises(ValueError, match=f"unknown method 'nope'; {known}$"):
        get_method("nope")


def test_register_method_adds_a_spec_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr("mce.methods.registry.METHODS", dict(METHODS))  # restored after the test

    class Constant:
        name = "constant"

        def __init__(self, inputs: MethodInputs) -> None:
            self.inputs = inputs

        def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
            return StepResult(torch.zeros(()))

    spec = MethodSpec("constant", "a zero loss", None, lambda i, o: Constant(i), lambda o: False)
    assert register_method(spec) is spec
    assert get_method("constant") is spec
    with pytest.raises(ValueError, match="'constant' is already registered"):
        register_method(spec)
    with pytest.raises(ValueError, match="'mce' is already registered"):
        register_method(dataclasses.replace(spec, name="mce"))
