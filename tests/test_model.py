"""The batched subset forward against a slow per-subset loop; encoders only on present samples."""

from __future__ import annotations

import torch
from oracles import random_digit_inputs, random_present

from mce.model import full_rows
from mce.shapley import coalition_plan
from mce.tasks.digits import build_model


def _batch(seed: int, num_samples: int = 9):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, num_samples, 2)
    inputs = random_digit_inputs(generator, num_samples)
    return inputs, present


def test_batched_subset_forward_equals_per_subset_loop(seed):
    torch.manual_seed(seed)
    model = build_model().eval()
    inputs, present = _batch(seed)
    with torch.no_grad():
        h = model.encode(inputs, present)
        plan = coalition_plan(present, 2)
        tokens, outputs = model.forward_rows(h, plan.rows)
        for r, (n, subset) in enumerate(plan.rows.tolist()):
            single = {}
            for m, name in enumerate(model.modalities):
                keep = (subset >> m) & 1
                single[name] = (
                    inputs[name][n : n + 1] if keep else torch.zeros_like(inputs[name][n : n + 1])
                )
            h_one = model.encode(single, torch.tensor([subset]))
            _, expected = model.forward_rows(h_one, full_rows(torch.tensor([subset])))
            torch.testing.assert_close(outputs[r : r + 1], expected, rtol=1e-5, atol=1e-5)


def test_encoders_run_only_on_present_samples(seed):
    model = build_model()
    inputs, present = _batch(seed, 11)
    seen = {}
    for name, encoder in model.encoders.items():
        encoder.register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, args[0].shape[0])
        )
    h = model.encode(inputs, present)
    for m, name in enumerate(model.modalities):
        assert seen[name] == int(((present >> m) & 1).sum())
        absent = ((present >> m) & 1) == 0
        assert (h[absent, m] == 0).all()
