"""The GPT has exactly the parameters the papers count, and knows its FLOPs.

Parameter formula: Muennighoff et al. 2023 (appendix), shapes from Hoffmann et al. 2022 Table A9.
"""

from __future__ import annotations

import math

import pytest
import torch

from runners.models.gpt import GPT, GPTConfig, count_params
from scaling.accounting import PAPER_VOCAB, PAPER_SEQ_LEN, SHAPES, TINY_SHAPES, param_count


def config_of(name: str, vocab: int = 256, seq_len: int = 128) -> GPTConfig:
    s = SHAPES[name]
    return GPTConfig(d_model=s.d_model, ffw_size=s.ffw_size, n_heads=s.attention_heads,
                     n_layers=s.n_layers, vocab_size=vocab, seq_len=seq_len)


@pytest.mark.parametrize("name", sorted(TINY_SHAPES))
def test_tiny_shapes_have_the_accounting_parameter_count(name):
    cfg = config_of(name)
    model = GPT(cfg)
    expected = param_count(cfg.d_model, cfg.ffw_size, cfg.n_layers, cfg.vocab_size, cfg.seq_len)
    assert model.num_params() == expected


@pytest.mark.parametrize("name", ["7M", "20M", "117M", "425M", "1143M"])
def test_paper_shapes_have_the_accounting_parameter_count(name):
    # built on the meta device: no memory is allocated, even for a billion parameters
    cfg = config_of(name, PAPER_VOCAB, PAPER_SEQ_LEN)
    expected = param_count(cfg.d_model, cfg.ffw_size, cfg.n_layers, PAPER_VOCAB, PAPER_SEQ_LEN)
    assert count_params(cfg) == expected


def test_paper_7m_shape_is_about_7m_parameters():
    # Table A9 names the (128, 512, 3 layers) shape "7M" at the GPT-2 vocabulary and 2048 context
    assert count_params(config_of("7M", PAPER_VOCAB, PAPER_SEQ_LEN)) == pytest.approx(7.3e6, rel=0.02)


def test_output_head_is_tied_and_final_norm_has_no_parameters():
    model = GPT(config_of("t32"))
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.bias is not None and model.lm_head.bias.numel() == 256
    assert list(model.ln_f.parameters()) == []
    assert all(ln.bias is None for b in model.blocks for ln in (b.ln_1, b.ln_2))


def test_initial_loss_is_uniform_over_the_vocabulary():
    torch.manual_seed(0)
    model = GPT(config_of("t48"))
    x = torch.randint(0, 256, (4, 128))
    _, loss = model(x, torch.roll(x, -1, 1))
    assert loss.item() == pytest.approx(math.log(256), abs=0.05)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(config_of("t32")).eval()
    x = torch.randint(0, 256, (1, 64))
    y = x.clone()
    y[0, 40:] = (y[0, 40:] + 1) % 256
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    assert torch.allclose(a[0, :40], b[0, :40], atol=1e-6)
    assert not torch.allclose(a[0, 40:], b[0, 40:])


def test_residual_projections_are_scaled_down_with_depth():
    torch.manual_seed(0)
    model = GPT(config_of("t256"))  # 6 layers: std 0.02 / sqrt(12)
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.blocks])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.blocks])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(12), rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)


def test_flops_per_token_counts_matmuls_and_attention():
    """MFU counts what the hardware multiplies: every weight but the position table (the tied
    token table is the output head's matrix), plus attention's two products, 12 L T d."""
    cfg = config_of("117M", PAPER_VOCAB, 1024)
    with torch.device("meta"):
        model = GPT(cfg)
    n = model.num_params()
    assert model.estimate_flops_per_token() == 6 * (n - 1024 * cfg.d_model) + 12 * cfg.n_layers * cfg.d_model * 1024
    # nanoGPT's GPT-2 small at 1024 context: 6 * ~124M + 12 * 12 * 768 * 1024 ~= 0.86 GFLOP/token
    assert 0.84e9 < model.estimate_flops_per_token() < 0.87e9
    tokens_per_s = 100_000.0
    assert model.estimate_mfu(tokens_per_s, 312e12) == pytest.approx(
        model.estimate_flops_per_token() * tokens_per_s / 312e12)


def test_sequences_longer_than_the_context_are_refused():
    model = GPT(config_of("t32"))
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 129, dtype=torch.long))
