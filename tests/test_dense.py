"""The dense (multi-scale) model contract: rows equal single-subset forwards, chunked rows equal
unchunked ones (values and gradients), the per-modality skip fusion equals mmFormer's
concatenation, and MCE trains on it."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from mce.data.dataset import Batch
from mce.methods import MethodInputs
from mce.methods.mce import MCEConfig, MCEMethod
from mce.nn.dense import DenseMultimodalModel, MultiScaleFeatures
from mce.nn.model import full_rows
from mce.nn.unet3d import SkipFusion
from mce.science.shapley import coalition_plan
from mce.tasks.brats import build_model
from mce.tasks.brats.segmentation import dice_ce_loss, dice_utility

CROP = 8


def tiny_model(seed: int = 0) -> DenseMultimodalModel:
    torch.manual_seed(seed)
    return build_model(crop=CROP, base=2, levels=3)


def inputs(num_samples: int, seed: int, side: int = CROP) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    names = ("t1", "t1ce", "flair", "t2")
    return {n: torch.randn(num_samples, 1, side, side, side, generator=generator) for n in names}


def test_encode_is_zero_where_absent_and_shapes_follow_levels() -> None:
    model = tiny_model().eval()
    present = torch.tensor([0b0101, 0b1110, 0b0001])
    h = model.encode(inputs(3, 1), present)
    assert isinstance(h, MultiScaleFeatures)
    assert [tuple(s.shape) for s in h.skips] == [(3, 4, 2, 8, 8, 8), (3, 4, 4, 4, 4, 4)]
    assert tuple(h.bottleneck.shape) == (3, 4, 8, 2, 2, 2)
    for n, mask in enumerate(present.tolist()):
        for m in range(4):
            absent = not (mask >> m) & 1
            for level in (*h.skips, h.bottleneck):
                assert bool((level[n, m] == 0).all()) == absent


def test_every_row_equals_the_sample_alone_with_that_subset() -> None:
    model = tiny_model(1).eval()
    x = inputs(2, 2)
    present = torch.tensor([0b1011, 0b0110])
    plan = coalition_plan(present, 4)
    with torch.no_grad():
        tokens, outputs = model.forward_rows(model.encode(x, present), plan.rows)
        for r, (n, subset) in enumerate(plan.rows.tolist()):
            single = {name: value[n : n + 1] for name, value in x.items()}
            alone = torch.tensor([subset])
            t, expected = model.forward_rows(model.encode(single, alone), full_rows(alone))
            assert torch.allclose(outputs[r], expected[0], atol=1e-5), (n, subset)
            assert torch.allclose(tokens[r], t[0], atol=1e-5)


def test_chunked_rows_give_the_same_outputs_and_gradients(caplog) -> None:
    x = inputs(2, 3)
    present = torch.tensor([0b1111, 0b0111])
    target = torch.randint(0, 4, (2, CROP, CROP, CROP), generator=torch.Generator().manual_seed(3))
    results = []
    for budget in (8.0, 1e-9):  # one chunk, then one row per chunk
        model = tiny_model(4).eval()
        model.row_memory_gb = budget
        plan = coalition_plan(present, 4)
        with caplog.at_level(logging.INFO, logger="mce.train"):
            tokens, outputs = model.forward_rows(model.encode(x, present), plan.rows)
        loss = dice_ce_loss(outputs, target[plan.rows[:, 0]]).mean() + tokens.square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((outputs.detach(), grads))
    assert "rows run in chunks of 1" in caplog.text
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert len(results[0][1]) == len(results[1][1])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_skip_fusion_equals_mmformer_concatenation() -> None:
    """sum over kept modalities of per-modality projections == conv1x1(lrelu(IN(concat of the
    skips with dropped ones zeroed))) with the equivalent full weight."""
    torch.manual_seed(5)
    modalities, channels = 3, 4
    fusion = SkipFusion(modalities, channels)
    skips = torch.randn(2, modalities, channels, 5, 6, 3)
    samples = torch.tensor([0, 0, 1, 1])
    kept = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    got = fusion(fusion.project(skips * _present(kept, samples, skips)), samples, kept)
    # mmFormer: zero the dropped modalities of each row, concatenate, IN -> LReLU -> 1x1 conv
    rows = skips[samples] * kept[:, :, None, None, None, None]
    concat = rows.reshape(4, modalities * channels, 5, 6, 3)
    groups = fusion.project_conv.weight.reshape(modalities, channels, channels)  # [m, out, in]
    full = torch.cat(list(groups), dim=1)[:, :, None, None, None]  # [out, m*in, 1, 1, 1]
    first = F.conv3d(F.leaky_relu(F.instance_norm(concat), 0.2), full) + fusion.bias
    assert torch.allclose(got, fusion.rest(first), atol=1e-5)


def _present(kept: torch.Tensor, samples: torch.Tensor, skips: torch.Tensor) -> torch.Tensor:
    """[N, M, 1, 1, 1, 1]: 1 where any row of the sample keeps the modality."""
    mask = torch.zeros(skips.shape[:2], dtype=torch.bool)
    mask.index_put_((samples,), kept, accumulate=True)
    return mask[:, :, None, None, None, None].to(skips.dtype)


@pytest.mark.parametrize("shapley", ["exact", "sampled"])
def test_mce_step_on_the_dense_model(shapley: str) -> None:
    model = tiny_model(6)
    present = torch.tensor([0b1111, 0b1011, 0b0100])
    target = torch.randint(0, 4, (3, CROP, CROP, CROP), generator=torch.Generator().manual_seed(6))
    batch = Batch(inputs(3, 6), target, present, torch.arange(3))
    method = MCEMethod(
        MethodInputs(
            loss=dice_ce_loss,
            utility=dice_utility,
            counts=torch.tensor([3, 2, 3, 2]),
            dataset_size=3,
            seed=0,
            upper=torch.full((3, 4), 0.5),
        ),
        MCEConfig(shapley=shapley, row_budget=3),
    )
    result = method.step(model, batch, step=0)
    assert torch.isfinite(result.loss)
    result.loss.backward()
    if shapley == "exact":
        assert result.logs["rows"] == 15 + 7 + 1
    else:  # the full row and at most 3 drawn subsets per sample
        assert 3 <= result.logs["rows"] <= 4 + 4 + 1
    for name in ("l_task", "l_single", "l_sub", "l_aux"):
        assert result.logs[name] >= 0
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.reconstruction.parameters()
    )


def test_unimodal_heads_light_or_shared_decoder() -> None:
    light = build_model(crop=CROP, base=2, levels=3)
    shared = build_model(crop=CROP, base=2, levels=3, head="decoder")
    assert len({id(head) for head in light.heads.values()}) == 4
    assert len({id(head) for head in shared.heads.values()}) == 1
    present = torch.tensor([0b1001, 0b0110])
    for model in (light, shared):
        h = model.encode(inputs(2, 8), present)
        outputs = model.unimodal_outputs(h, present)
        assert sorted(outputs) == [0, 1, 2, 3]
        for m, (index, logits) in outputs.items():
            assert index.tolist() == [n for n in range(2) if (int(present[n]) >> m) & 1]
            assert tuple(logits.shape) == (index.numel(), 4, CROP, CROP, CROP)
