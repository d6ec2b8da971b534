"""The batched subset forward against a slow per-subset loop; encoders only on present samples."""

from __future__ import annotations

import pytest
import torch
from oracles import random_digit_inputs, random_present

from mce.nn.model import full_rows
from mce.science.shapley import coalition_plan
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


def test_decoder_features_are_what_the_last_layer_reads() -> None:
    """forward_rows_features: outputs equal forward_rows', and the features give them through
    the decoder's last layer (a Sequential's dropout before it left out)."""
    from torch import nn

    from mce.nn.model import decode_with_features
    from mce.tasks.iemocap import build_model

    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3)).train()
    fused = torch.randn(4, 6)
    features, outputs = decode_with_features(decoder, fused)
    torch.testing.assert_close(features, torch.relu(decoder[0](fused)))
    model = build_model().eval()
    h = torch.randn(5, 3, model.dim)
    rows = torch.tensor([[0, 7], [1, 1], [2, 6], [3, 4], [4, 5]])
    tokens, feats, out = model.forward_rows_features(h, rows)
    expected_tokens, expected = model.forward_rows(h, rows)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(tokens, expected_tokens)
    torch.testing.assert_close(model.decoder[-1](feats), out)
    with pytest.raises(ValueError, match="exposes no features"):
        decode_with_features(nn.Linear(2, 2), fused)


def test_dense_decoders_give_the_features_their_head_reads() -> None:
    from mce.nn.bev import BevDecoder
    from mce.nn.unet3d import UNetDecoder3D

    torch.manual_seed(0)
    unet = UNetDecoder3D(4, 3, 4).eval()
    levels = [torch.randn(2, 4 << k, 8 >> k, 8 >> k, 8 >> k) for k in range(3)]
    features, logits = unet.forward_features(levels)
    torch.testing.assert_close(unet.head(features), logits)
    torch.testing.assert_close(unet(levels), logits)
    bev = BevDecoder(8).eval()
    grid = torch.randn(2, 8, 16, 16)
    features, logits = bev.forward_features(grid)
    torch.testing.assert_close(bev.head(features), logits)
    torch.testing.assert_close(bev([grid]), logits)


def test_the_reconstruction_attends_to_absent_positions_as_mask_tokens() -> None:
    """Eq. 15: MHSA over all M tokens; an absent position is E_pos alone (a learned mask token),
    attended to like the others, whatever its input held."""
    from mce.nn.reconstruction import ReconstructionTransformer

    torch.manual_seed(0)
    rec = ReconstructionTransformer(3, 8, heads=2, ff_dim=16, dropout=0.0).eval()
    tokens = torch.randn(4, 3, 8)
    kept = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    out = rec(tokens, kept)
    poisoned = tokens.clone()
    poisoned[~kept] = 1e3
    torch.testing.assert_close(rec(poisoned, kept), out)
    # by hand: one pre-norm encoder layer over the M tokens, no attention mask
    layer = rec.encoder.layers[0]
    x = tokens * kept[..., None] + rec.positional
    normed = layer.norm1(x)
    h = x + layer.self_attn(normed, normed, normed, need_weights=False)[0]
    h = h + layer.linear2(torch.relu(layer.linear1(layer.norm2(h))))
    torch.testing.assert_close(out, h)
    # a present token's output depends on the absent position's mask token
    with torch.no_grad():
        rec.positional[2] += torch.randn(8)
    assert not torch.allclose(rec(tokens, kept)[0, 0], out[0, 0])
