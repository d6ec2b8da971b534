"""One MCE training step: every term against a hand-written loop, Shapley values and B against
the oracle; ablation switches.

The digits task supplies the model, loss and utility; the method sees only MethodInputs.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import itertools
import textwrap

import pytest
import torch
import torch.nn.functional as F
from oracles import random_digit_inputs, random_present, shapley_by_permutations
from torch import nn

from mce.data.dataset import Batch
from mce.methods import MCEConfig, MCEMethod, MethodInputs
from mce.methods import mce as mce_method
from mce.methods.official import official_batch_shapley
from mce.nn import ConcatFusion, ReconstructionTransformer
from mce.nn.model import MultimodalModel, full_rows
from mce.ops.reference import shapley_brute_force
from mce.science.lce import presence_counts
from mce.science.shapley import coalition_plan, plan_shapley
from mce.tasks.digits import TASK


def _setup(seed: int, num_samples: int = 13):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, num_samples, 2)
    inputs = random_digit_inputs(generator, num_samples)
    target = torch.randint(0, 10, (num_samples,), generator=generator)
    # Utilities of the frozen unimodal models on a 100-sample training split; the batch is its
    # first samples.
    upper = torch.zeros(100, 2)
    upper[:num_samples] = torch.rand(num_samples, 2, generator=generator).round() * torch.stack(
        [(present >> m) & 1 for m in range(2)], 1
    )
    batch = Batch(inputs, target, present, torch.arange(num_samples))
    torch.manual_seed(seed)
    model = TASK.build_model().eval()  # eval: no dropout, so the oracle sees the same model
    counts = torch.tensor([40, 90])
    return model, batch, upper, counts


def _inputs(counts, upper, seed: int, dataset_size: int = 100) -> MethodInputs:
    return MethodInputs(TASK.loss, TASK.utility, counts, dataset_size, seed, upper)


def test_step_shapley_and_b_equal_the_oracle(seed):
    model, batch, upper, counts = _setup(seed)
    method = MCEMethod(_inputs(counts, upper, seed), MCEConfig())
    logs = method.step(model, batch, step=0).logs
    # Oracle: predict from every subset of every sample one at a time, Eq. 5 by brute force.
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present, batch.lengths)

        def utility(n: int, subset: int) -> float:
            _, out = model.forward_rows(h[n : n + 1], full_rows(torch.tensor([subset])))
            return float(out.argmax(-1).item() == batch.target[n].item())

        phi = torch.tensor(shapley_brute_force(batch.present.tolist(), utility, 2))
    for m, name in enumerate(model.modalities):
        present_m = ((batch.present >> m) & 1).bool()
        phi_m = phi[:, m].sum()
        u_m = upper[:, m].sum()
        assert logs[f"phi/{name}"] == pytest.approx(float(phi_m), abs=1e-5)
        assert logs[f"U/{name}"] == pytest.approx(float(u_m))
        expected_b = max(float(u_m - phi_m), 0.0) / int(present_m.sum())
        assert logs[f"B/{name}"] == pytest.approx(expected_b, abs=1e-5)


@pytest.mark.parametrize("term", ["single", "sub", "aux"])
def test_ablation_switch_removes_exactly_its_term(seed, term):
    model, batch, upper, counts = _setup(seed)
    full = MCEConfig(lambda_single=0.7, lambda_sub=1.3, lambda_aux=2.0)
    without = dataclasses.replace(full, **{f"use_{term}": False})
    result = MCEMethod(_inputs(counts, upper, seed), full).step(model, batch, 0)
    ablated = MCEMethod(_inputs(counts, upper, seed), without).step(model, batch, 0)
    assert f"l_{term}" not in ablated.logs
    expected = result.loss - getattr(full, f"lambda_{term}") * result.logs[f"l_{term}"]
    torch.testing.assert_close(ablated.loss, expected, rtol=1e-5, atol=1e-5)


def test_without_a_and_b_factors_are_one(seed):
    model, batch, _upper, counts = _setup(seed)
    config = MCEConfig(use_a=False, use_b=False)
    logs = MCEMethod(_inputs(counts, None, seed), config).step(model, batch, 0).logs
    assert all(logs[f"A/{name}"] == 1.0 for name in model.modalities)
    assert not any(key.startswith("B/") for key in logs)


def test_factor_a_follows_presence_counts(seed):
    model, batch, upper, counts = _setup(seed)
    logs = MCEMethod(_inputs(counts, upper, seed), MCEConfig()).step(model, batch, 0).logs
    raw = torch.tensor([100 / 40, 100 / 90])
    assert logs["A/image"] == pytest.approx(float(raw[0] / raw.mean()))
    assert presence_counts(torch.tensor([1, 3, 2]), 2).tolist() == [2, 2]


def test_monte_carlo_step_runs_on_sampled_rows(seed):
    model, batch, upper, counts = _setup(seed)
    config = MCEConfig(shapley="mc", mc_k=4)
    result = MCEMethod(_inputs(counts, upper, seed), config).step(model, batch, 0)
    assert torch.isfinite(result.loss)
    assert result.logs["rows"] <= 4 * 2 * 13


def test_official_modes_run(seed):
    model, batch, upper, counts = _setup(seed)
    config = MCEConfig(shapley="official", weighting="official")
    logs = MCEMethod(_inputs(counts, upper, seed), config).step(model, batch, 0).logs
    assert all(logs[f"B/{name}"] >= 0 for name in model.modalities)
    # phi and B come from the authors' batch formula on the exact plan's rows.
    plan = coalition_plan(batch.present, 2)
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present, batch.lengths)
        _, outputs = model.forward_rows(h, plan.rows)
    v = TASK.utility(outputs, batch.target[plan.samples])
    phi = official_batch_shapley(plan, v)
    for m, name in enumerate(model.modalities):
        present_m = int(((batch.present >> m) & 1).sum())
        assert logs[f"phi/{name}"] == pytest.approx(float(phi[m]), abs=1e-5)
        expected_b = max(float(upper[:, m].sum() - phi[m]), 0.0) / present_m
        assert logs[f"B/{name}"] == pytest.approx(expected_b, abs=1e-5)


def test_bad_upper_bounds_are_refused(seed):
    _, _, upper, counts = _setup(seed)
    with pytest.raises(ValueError, match=r"upper must have shape \[N_train, M\] = \[100, 2\]"):
        MCEMethod(_inputs(counts, upper[:13], seed), MCEConfig())
    with pytest.raises(ValueError, match="utilities in \\[0, 1\\]"):
        MCEMethod(_inputs(counts, torch.full((100, 2), float("nan")), seed), MCEConfig())
    with pytest.raises(ValueError, match="factor B needs the unimodal upper bounds"):
        MCEMethod(_inputs(counts, None, seed), MCEConfig())


# --- Every term of one step against a hand-written loop over samples and subsets (issue 8) ----
#
# Three modalities, samples missing one or two of them, a tiny model without dropout (train
# mode, as the trainer runs the step), a continuous utility (softmax probability of the target)
# so that phi is not a count of ties, and an upper-bound table chosen so that one modality's
# capability gap U_m - phi_m is negative (B's clamp matters) and the others' positive.

_NAMES = ("a", "b", "c")
_IN_DIMS = (5, 4, 6)
_CLASSES, _DIM, _DATASET_SIZE = 4, 8, 40
_COUNTS = (31, 17, 9)  # presence counts of the training split: A_m differ and mean(raw A) != 1
# 0b111 (all), pairs, singletons: every modality is absent from some samples, subset sizes differ
_PRESENT = (0b111, 0b011, 0b101, 0b001, 0b110, 0b100, 0b010, 0b111, 0b011, 0b101, 0b001)
_LAMBDAS = {"lambda_single": 0.7, "lambda_sub": 1.3, "lambda_aux": 2.0}
_TERMS = ("l_task", "l_single", "l_sub", "l_aux", "loss")

_mce_module = importlib.import_module("mce.methods.mce")


def _ce(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, target, reduction="none")


def _p_target(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return outputs.softmax(-1).gather(1, target[:, None]).squeeze(1)


def _tiny_model(seed: int) -> MultimodalModel:
    torch.manual_seed(seed)
    return MultimodalModel(
        _NAMES,
        {n: nn.Sequential(nn.Linear(d, _DIM), nn.Tanh()) for n, d in zip(_NAMES, _IN_DIMS)},
        {n: nn.Linear(_DIM, _CLASSES) for n in _NAMES},
        ConcatFusion(3, _DIM),
        nn.Linear(3 * _DIM, _CLASSES),
        ReconstructionTransformer(3, _DIM, heads=2, ff_dim=16, dropout=0.0),
        _DIM,
    )


def _three_modality_batch(seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    present = torch.tensor(_PRESENT)
    inputs = {
        name: torch.randn(len(_PRESENT), d, generator=generator) * ((present >> m) & 1)[:, None]
        for m, (name, d) in enumerate(zip(_NAMES, _IN_DIMS))
    }
    target = torch.randint(0, _CLASSES, (len(_PRESENT),), generator=generator)
    index = torch.randperm(_DATASET_SIZE, generator=generator)[: len(_PRESENT)]
    return Batch(inputs, target, present, index)


def _members(mask: int) -> list[int]:
    return [m for m in range(len(_NAMES)) if (mask >> m) & 1]


def _nonempty_subsets(mask: int) -> list[int]:
    members = _members(mask)
    return [
        sum(1 << m for m in chosen)
        for size in range(1, len(members) + 1)
        for chosen in itertools.combinations(members, size)
    ]


def _loop_terms(
    model: MultimodalModel, batch: Batch, table: torch.Tensor | None, config: MCEConfig
) -> dict[str, object]:
    """Eqs. 3, 5, 8, 9, 11, 13, 14 by plain loops, one model pass per (sample, subset).

    Calls the model's modules directly (no encode, subset_gather or forward_rows), so the batched
    paths of the step are checked, not reused. ``table`` None: phi only (for choosing U).
    """
    present = [int(p) for p in batch.present]
    y = batch.target
    num_samples, num_modalities = len(present), len(_NAMES)
    feature = {  # h_{n,m}, only where m is present in n
        (n, m): model.encoders[_NAMES[m]](batch.inputs[_NAMES[m]][n : n + 1])[0]
        for n in range(num_samples)
        for m in _members(present[n])
    }

    def one_pass(n: int, subset: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.stack(
            [
                feature[n, m] if (subset >> m) & 1 else torch.zeros(_DIM)
                for m in range(num_modalities)
            ]
        )[None]
        kept = torch.tensor([[bool((subset >> m) & 1) for m in range(num_modalities)]])
        rebuilt = model.reconstruction(tokens, kept)
        return rebuilt[0], model.decoder(model.fusion(rebuilt))

    passes = {
        (n, s): one_pass(n, s) for n in range(num_samples) for s in _nonempty_subsets(present[n])
    }

    def loss(n: int, outputs: torch.Tensor) -> torch.Tensor:
        return _ce(outputs, y[n : n + 1])[0]

    def utility(n: int, subset: int) -> float:
        return float(_p_target(passes[n, subset][1].detach(), y[n : n + 1]))

    phi_per_sample = shapley_by_permutations(present, utility, num_modalities)
    phi = [sum(row[m] for row in phi_per_sample) for m in range(num_modalities)]
    if table is None:
        return {"phi": phi}

    holders = [
        [n for n in range(num_samples) if (present[n] >> m) & 1] for m in range(num_modalities)
    ]
    upper = [
        sum(float(table[int(batch.index[n]), m]) for n in holders[m]) for m in range(num_modalities)
    ]
    raw_a = [_DATASET_SIZE / c for c in _COUNTS]
    factor_a = [r / (sum(raw_a) / len(raw_a)) for r in raw_a]
    factor_b = [
        max(upper[m] - phi[m], 0.0) / len(holders[m]) if holders[m] else 0.0
        for m in range(num_modalities)
    ]
    weight = [factor_a[m] * factor_b[m] for m in range(num_modalities)]

    # L_task: each sample's prediction from all of its present modalities, mean over samples.
    l_task = sum(loss(n, passes[n, present[n]][1]) for n in range(num_samples)) / num_samples
    # L_single (Eq. 9): sum_m A_m B_m mean over the samples holding m of its head's loss.
    l_single = sum(
        weight[m]
        * sum(loss(n, model.heads[_NAMES[m]](feature[n, m][None])) for n in holders[m])
        / len(holders[m])
        for m in range(num_modalities)
    )
    # S_batch (Eq. 10) and N_S: the subsets feasible for some sample, and the samples for each.
    s_batch = sorted({s for p in present for s in _nonempty_subsets(p)})
    feasible = {s: [n for n in range(num_samples) if s & present[n] == s] for s in s_batch}
    # L_sub (Eq. 11): per subset, mean over its samples; then mean over subsets.
    l_sub = sum(
        sum(loss(n, passes[n, s][1]) for n in feasible[s]) / len(feasible[s]) for s in s_batch
    ) / len(s_batch)

    # L_aux (Eq. 13): dropped = present in n and not in S; L1 (mean over features) between the
    # rebuilt token and the detached encoder feature, weighted A_m B_m, mean over the dropped.
    def aux_of(n: int, s: int) -> torch.Tensor:
        dropped = [m for m in _members(present[n]) if not (s >> m) & 1]
        if not dropped:
            return torch.zeros(())
        errors = [
            weight[m] * (passes[n, s][0][m] - feature[n, m].detach()).abs().mean() for m in dropped
        ]
        return sum(errors) / len(dropped)

    l_aux = sum(sum(aux_of(n, s) for n in feasible[s]) / len(feasible[s]) for s in s_batch) / len(
        s_batch
    )
    total = (
        l_task
        + config.lambda_single * l_single
        + config.lambda_sub * l_sub
        + config.lambda_aux * l_aux
    )
    return {
        "l_task": l_task,
        "l_single": l_single,
        "l_sub": l_sub,
        "l_aux": l_aux,
        "loss": total,
        "phi": phi,
        "U": upper,
        "A": factor_a,
        "B": factor_b,
        "rows": len(passes),
    }


def _upper_table(seed: int, batch: Batch, phi: list[float]) -> torch.Tensor:
    """U in [0, 1] per training sample, 0 where absent; the modality with the largest phi (> 0
    by efficiency: sum_m phi_m = sum_n v_n(A_n) > 0) gets U_m = phi_m / 2, so its gap is
    negative; the others get values near 1 (gap positive). Rows outside the batch are noise."""
    generator = torch.Generator().manual_seed(seed + 1)
    table = torch.rand(_DATASET_SIZE, len(_NAMES), generator=generator)
    clamped = max(range(len(_NAMES)), key=lambda m: phi[m])
    for m in range(len(_NAMES)):
        holds = ((batch.present >> m) & 1).to(torch.float32)
        values = 0.9 + 0.1 * torch.rand(len(_PRESENT), generator=generator)
        if m == clamped:
            values = torch.full((len(_PRESENT),), phi[m] / 2 / float(holds.sum()))
        table[batch.index, m] = values * holds
    return table


def _mismatches(seed: int) -> set[str]:
    """Which of the step's logged terms, loss and gradients differ from the hand-written loop."""
    model, batch = _tiny_model(seed), _three_modality_batch(seed)
    config = MCEConfig(**_LAMBDAS)
    table = _upper_table(seed, batch, _loop_terms(model, batch, None, config)["phi"])
    inputs = MethodInputs(
        _ce, _p_target, torch.tensor(_COUNTS), _DATASET_SIZE, seed=seed, upper=table
    )
    result = MCEMethod(inputs, config).step(model, batch, step=0)
    expected = _loop_terms(model, batch, table, config)
    # Preconditions that give the injected mistakes something to change.
    gaps = [u - p for u, p in zip(expected["U"], expected["phi"])]
    assert sum(g < 0 for g in gaps) == 1 and sum(g > 0 for g in gaps) == 2, gaps

    def close(got: float, want: float) -> bool:
        return got == pytest.approx(want, rel=1e-5, abs=1e-6)

    def value(x: object) -> float:
        return x.item() if isinstance(x, torch.Tensor) else float(x)

    wrong = {term for term in _TERMS if not close(result.logs[term], value(expected[term]))}
    if not close(result.loss.item(), value(expected["loss"])):
        wrong.add("loss")
    for key in ("phi", "U", "A", "B"):
        for m, name in enumerate(_NAMES):
            if not close(result.logs[f"{key}/{name}"], expected[key][m]):
                wrong.add(key)
    if result.logs["rows"] != expected["rows"]:
        wrong.add("rows")
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(result.loss, params, allow_unused=True)
    want = torch.autograd.grad(expected["loss"], params, allow_unused=True)
    for g, w, p in zip(got, want, params):
        g = torch.zeros_like(p) if g is None else g
        w = torch.zeros_like(p) if w is None else w
        if not torch.allclose(g, w, rtol=1e-4, atol=1e-6):
            wrong.add("grad")
    return wrong


def test_step_terms_equal_a_hand_written_loop_with_absent_modalities(seed):
    assert _mismatches(seed) == set()


def _aux_on_absent_modalities_too(monkeypatch):
    real = _mce_module.aux_loss

    def aux(tokens, h, rows, present, weights, average):
        # every modality outside the row's subset counts as dropped, present in n or not
        everything = torch.full_like(present, (1 << h.shape[1]) - 1)
        return real(tokens, h, rows, everything, weights, average)

    monkeypatch.setattr(_mce_module, "aux_loss", aux)


def _mutated_step(old: str, new: str):
    """MCEMethod.step with one line of its source replaced (a mutant the tests must reject)."""
    source = textwrap.dedent(inspect.getsource(MCEMethod.step))
    assert source.count(old) == 1, f"mutation site {old!r} gone from MCEMethod.step: update it"
    namespace = dict(vars(_mce_module))
    exec(compile(source.replace(old, new), "<mutant>", "exec"), namespace)  # noqa: S102 test mutant
    return namespace["step"]


def _task_over_every_row(monkeypatch):
    step = _mutated_step("l_task = row_losses[full].mean()", "l_task = row_losses.mean()")
    monkeypatch.setattr(MCEMethod, "step", step)


def _a_not_normalised(monkeypatch):
    def factor(counts, dataset_size):
        return dataset_size / counts.to(torch.float32)

    monkeypatch.setattr(_mce_module, "dataset_factor", factor)


def _b_not_clamped(monkeypatch):
    def factor(upper, phi, batch_counts):
        return ((upper - phi) / batch_counts.clamp(min=1)).float()

    monkeypatch.setattr(_mce_module, "batch_factor", factor)


def _sub_over_rows(monkeypatch):
    monkeypatch.setattr(_mce_module, "subset_loss", lambda losses, *_: losses.mean())


def _single_on_absent_samples(monkeypatch):
    # the authors' code's mistake: unimodal heads scored on every sample, zero features included
    def every_sample(self, h, present):
        index = torch.arange(h.shape[0])
        return {m: (index, self.heads[name](h[:, m])) for m, name in enumerate(self.modalities)}

    monkeypatch.setattr(MultimodalModel, "unimodal_outputs", every_sample)


# What each mistake changes: its own term, the total and the gradients, and nothing else; a
# wrong A or B also changes the terms they weight (L_single, L_aux).
_WEIGHTED = {"l_single", "l_aux", "loss", "grad"}


_MUTANTS = [
    (_aux_on_absent_modalities_too, {"l_aux", "loss", "grad"}),
    (_task_over_every_row, {"l_task", "loss", "grad"}),
    (_a_not_normalised, {"A"} | _WEIGHTED),
    (_b_not_clamped, {"B"} | _WEIGHTED),
    (_sub_over_rows, {"l_sub", "loss", "grad"}),
    (_single_on_absent_samples, {"l_single", "loss", "grad"}),
]


@pytest.mark.parametrize(
    ("inject", "caught_by"),
    [pytest.param(inject, caught, id=inject.__name__.strip("_")) for inject, caught in _MUTANTS],
)
@pytest.mark.parametrize("fixed_seed", [1, 2, 5])
def test_hand_written_loop_rejects_a_wrong_loss(fixed_seed, monkeypatch, inject, caught_by):
    """Each deliberate mistake, injected into the step, is caught by the comparison above, in
    exactly the logs it should change. Fixed seeds: on a random batch a mistake can, rarely,
    land within the comparison's float32 tolerance of the right value (L_sub averaged over rows
    came within 6e-6 of the per-subset mean at seed 0); at these seeds every mistake moves its
    terms well past the tolerance."""
    inject(monkeypatch)
    assert _mismatches(fixed_seed) == caught_by


def test_u_from_a_callable_equals_u_from_the_table(seed):
    """A task with random crops scores U on each batch (``upper`` a callable); the same values
    as a table give the same step."""
    model, batch, upper, counts = _setup(seed)
    seen = []

    def per_batch(b: Batch) -> torch.Tensor:
        seen.append(b.index.tolist())
        return upper[b.index]

    from_table = MCEMethod(_inputs(counts, upper, seed), MCEConfig()).step(model, batch, 0)
    from_call = MCEMethod(_inputs(counts, per_batch, seed), MCEConfig()).step(model, batch, 0)
    assert seen == [batch.index.tolist()]
    assert from_call.logs == from_table.logs
    with pytest.raises(ValueError, match="a Tensor"):
        _inputs(counts, [[0.0, 1.0]], seed)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_clean_utilities_skip_their_pass_only_when_rows_are_deterministic(seed, dropout):
    """Without dropout or batch norm in the rows' modules the training outputs are the clean
    ones: the eval-mode pass is skipped and phi, B are unchanged; with dropout it runs."""
    model = _tiny_model(seed)
    model.reconstruction = ReconstructionTransformer(3, _DIM, heads=2, ff_dim=16, dropout=dropout)
    model.train()
    batch = _three_modality_batch(seed)
    upper = torch.rand(_DATASET_SIZE, 3, generator=torch.Generator().manual_seed(seed))
    inputs = MethodInputs(_ce, _p_target, torch.tensor([30, 20, 10]), _DATASET_SIZE, seed, upper)
    calls = []
    original = MultimodalModel.forward_rows

    def counted(self, h, rows):
        calls.append(torch.is_grad_enabled())
        return original(self, h, rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MultimodalModel, "forward_rows", counted)
        torch.manual_seed(seed)
        logs = MCEMethod(inputs, MCEConfig()).step(model, batch, 0).logs
        assert calls == ([True] if dropout == 0 else [True, False])
        patch.setattr(mce_method, "_same_in_training", lambda modules: False)
        torch.manual_seed(seed)
        forced = MCEMethod(inputs, MCEConfig()).step(model, batch, 0).logs
    if dropout == 0:
        for key in logs:
            if key.startswith(("phi/", "B/")):
                assert logs[key] == pytest.approx(forced[key], abs=1e-6), key


def _clean_pass_inputs(seed: int) -> MethodInputs:
    upper = torch.rand(_DATASET_SIZE, 3, generator=torch.Generator().manual_seed(seed))
    return MethodInputs(_ce, _p_target, torch.tensor([30, 20, 10]), _DATASET_SIZE, seed, upper)


@pytest.mark.parametrize("in_eval", [None, "decoder", "encoders.b"])
def test_the_clean_utility_pass_restores_every_training_flag(seed, in_eval):
    """The eval-mode pass of the clean utilities leaves each module in the mode it found it in:
    training modules training, a module deliberately in eval mode still in eval mode."""
    model = _tiny_model(seed)
    model.reconstruction = ReconstructionTransformer(3, _DIM, heads=2, ff_dim=16, dropout=0.3)
    model.train()
    if in_eval is not None:
        model.get_submodule(in_eval).eval()
    assert not mce_method._same_in_training(model.row_modules())  # dropout: the pass runs
    before = {name: module.training for name, module in model.named_modules()}
    assert sum(before.values()) > sum(not training for training in before.values())
    MCEMethod(_clean_pass_inputs(seed), MCEConfig()).step(model, _three_modality_batch(seed), 0)
    assert {name: module.training for name, module in model.named_modules()} == before


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm1d]:
    return [module for module in model.modules() if isinstance(module, nn.BatchNorm1d)]


@pytest.mark.parametrize("where", ["fusion", "decoder"])
def test_batch_norm_in_the_rows_takes_the_clean_pass_and_keeps_its_statistics(seed, where):
    """With batch norm in a row module the training outputs (batch statistics) are not the
    eval-mode ones: phi comes from an eval-mode forward after the training forward, and that
    pass leaves the running statistics as the training forward updated them (once)."""
    model = _tiny_model(seed)
    if where == "fusion":
        model.fusion = nn.Sequential(ConcatFusion(3, _DIM), nn.BatchNorm1d(3 * _DIM))
    else:
        model.decoder = nn.Sequential(nn.BatchNorm1d(3 * _DIM), nn.Linear(3 * _DIM, _CLASSES))
    model.train()
    assert not mce_method._same_in_training(model.row_modules())
    batch = _three_modality_batch(seed)
    plan = coalition_plan(batch.present, 3)
    row_target = batch.target[plan.samples]
    reference = copy.deepcopy(model)
    with torch.no_grad():
        h = reference.encode(batch.inputs, batch.present, batch.lengths)
        _, training_outputs = reference.forward_rows(h, plan.rows)  # updates the statistics
        reference.eval()
        _, eval_outputs = reference.forward_rows(h, plan.rows)
    clean = plan_shapley(plan, _p_target(eval_outputs, row_target)).sum(0)
    noisy = plan_shapley(plan, _p_target(training_outputs, row_target)).sum(0)
    assert (clean - noisy).abs().max() > 1e-3  # the two passes give different phi here

    logs = MCEMethod(_clean_pass_inputs(seed), MCEConfig()).step(model, batch, 0).logs
    for m, name in enumerate(_NAMES):
        assert logs[f"phi/{name}"] == pytest.approx(float(clean[m]), abs=1e-5), name
    (norm,), (expected,) = _batch_norms(model), _batch_norms(reference)
    assert int(norm.num_batches_tracked) == 1
    torch.testing.assert_close(norm.running_mean, expected.running_mean)
    torch.testing.assert_close(norm.running_var, expected.running_var)
    assert model.training and norm.training


def test_too_many_modalities_for_a_step_are_refused_by_name() -> None:
    from mce.methods import MethodInputs
    from mce.methods.mce import MAX_STEP_MODALITIES, MCEConfig, MCEMethod

    many = MAX_STEP_MODALITIES + 1
    inputs = MethodInputs(
        loss=lambda o, t: o.sum(1),
        utility=lambda o, t: o.sum(1),
        counts=torch.ones(many, dtype=torch.int64),
        dataset_size=10,
        seed=0,
    )
    with pytest.raises(ValueError, match=f"{many} modalities would need .* at most 20"):
        MCEMethod(inputs, MCEConfig(use_b=False))
    inputs = dataclasses.replace(inputs, counts=torch.ones(MAX_STEP_MODALITIES, dtype=torch.int64))
    MCEMethod(inputs, MCEConfig(use_b=False))
