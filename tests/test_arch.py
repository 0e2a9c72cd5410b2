"""Pluggable architectures: the Mamba + dense hybrid and SWELU (``runners.models.mamba``) against their
definitions, its parameter and FLOP counts (``scaling.accounting``) against the built model, the
chunked scan against the step-by-step one, a plug-in factory, and a real grid that trains and
fits each architecture on the CPU, then ``runners.compare`` of GPT vs Mamba at equal FLOPs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runners.models.arch import build_model, check_arch
from runners.models.mamba import SWELU, selective_scan_chunked, selective_scan_sequential
from runners.models.gpt import GPTConfig
from scaling import accounting
from scaling.cli import UsageError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("activation", ["gelu", "swelu"])
@pytest.mark.parametrize("d, f, L, V, S", [(16, 64, 1, 256, 128), (48, 192, 3, 256, 128), (1024, 2048, 6, 50257, 1024)])
def test_mamba_parameter_count_is_the_accounting_formula(d, f, L, V, S, activation):
    cfg = GPTConfig(d_model=d, ffw_size=f, n_layers=L, n_heads=1, vocab_size=V, seq_len=S, arch="mamba",
                    activation=activation)
    with torch.device("meta"):
        n = build_model(cfg).num_params()
    assert n == accounting.mamba_param_count(d, f, L, V, S, activation)
    # the study's shape (d 1024, 6 Mamba blocks, dense hidden 2048, GPT-2 vocab): ~1e8 parameters
    if d == 1024:
        assert 0.9e8 < n < 1.3e8


def test_mamba_flops_per_token():
    kw = dict(d_model=32, ffw_size=128, n_layers=2, vocab=256, seq_len=128, arch="mamba")
    n = accounting.mamba_param_count(32, 128, 2, 256, 128)
    assert accounting.flops_per_token("6N", **kw) == 6 * n
    ne = n - 256 * 32 - 128 * 32
    assert accounting.flops_per_token("6N_ne", **kw) == 6 * ne
    # the scan's 9 E N forward FLOPs per token and block, x3 for training, E = 2d, N = 16
    assert accounting.flops_per_token("6N_ne+head+attn", **kw) - accounting.flops_per_token("6N_ne+head", **kw) == 27 * 2 * 64 * 16
    # vectorised over a table that mixes architectures
    import numpy as np
    both = accounting.flops_per_token("6N", d_model=np.array([32, 32]), ffw_size=np.array([128, 128]),
                                      n_layers=np.array([2, 2]), vocab=np.array([256, 256]),
                                      seq_len=np.array([128, 128]), arch=np.array(["gpt", "mamba"], dtype=object))
    assert list(both) == [6 * accounting.param_count(32, 128, 2, 256, 128), 6 * n]


def test_chunked_scan_matches_the_step_by_step_scan_in_values_and_gradients():
    torch.manual_seed(0)
    b, T, E, N = 2, 37, 6, 4
    u = torch.randn(b, T, E, requires_grad=True)
    delta = torch.rand(b, T, E) * 2
    A, B, C, D = -torch.rand(E, N) * 3, torch.randn(b, T, N), torch.randn(b, T, N), torch.randn(E)
    ref = selective_scan_sequential(u, delta, A, B, C, D)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), u)
    for chunk in (1, 5, 16, 64):
        out = selective_scan_chunked(u, delta, A, B, C, D, chunk=chunk)
        (g,) = torch.autograd.grad(out.square().sum(), u)
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5) and torch.allclose(g, g_ref, rtol=1e-4, atol=1e-4)
    # h_1 = dt_1 B_1 x_1, y_1 = C_1 . h_1 + D x_1: the first output by hand
    hand = (delta[0, 0, 0] * u[0, 0, 0] * B[0, 0] * C[0, 0]).sum() + D[0] * u[0, 0, 0]
    assert torch.isclose(ref[0, 0, 0], hand, atol=1e-6)


def test_swelu_is_its_formula_and_learns_its_shape():
    act = SWELU(k_init=1.5, lambda_init=2.0)
    z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    expected = 2.0 * torch.sign(z) * (1 - torch.exp(-(z.abs() ** 1.5)))
    assert torch.allclose(act(z), expected, atol=1e-5)
    assert torch.allclose(act(-z), -act(z))                      # odd
    (act(z) - 1).square().sum().backward()
    assert act.k.grad is not None and act.lam.grad is not None and act.lam.grad != 0


def test_weight_decay_spares_a_log_as_mambas_reference_does():
    model = build_model(GPTConfig(n_layers=2, d_model=16, n_heads=1, ffw_size=64, vocab_size=256, seq_len=32,
                                  arch="mamba"))
    decay, no_decay = (group["params"] for group in model.configure_optimizer(1e-3, 0.1, (0.9, 0.95)).param_groups)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay}
    assert not any(n.endswith("A_log") for n in decayed)
    assert sum(n.endswith("A_log") for n in map(names.get, map(id, no_decay))) == 2       # one per block
    assert any(n.endswith("in_proj.weight") for n in decayed)                         # matrices still decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_a_plugin_factory_is_built_and_counted_and_a_bad_one_is_a_usage_error():
    from runners.grid import plan
    specs = plan.isoflop_grid(accounting.parse_budgets("smoke")[0], arch="runners.models.gpt:GPT", flops_convention="6N")
    ref = plan.isoflop_grid(accounting.parse_budgets("smoke")[0], flops_convention="6N")
    assert [s.params for s in specs] == [s.params for s in ref]
    assert all(abs(s.flops - accounting.parse_budgets("smoke")[0].flops) / s.flops < 1e-3 for s in specs)
    assert {s.run_id for s in specs}.isdisjoint(s.run_id for s in ref)   # the arch is part of the run
    for bad in ("transformer", "no.such.module:f", "runners.models.gpt:NOPE"):
        with pytest.raises(UsageError):
            check_arch(bad)


def test_the_default_arch_leaves_run_ids_unchanged():
    from runners.grid import plan
    b = accounting.parse_budgets("smoke")[0]
    assert [s.run_id for s in plan.isoflop_grid(b)] == [s.run_id for s in plan.isoflop_grid(b, arch="gpt")]
    assert plan.isoflop_grid(b)[0].to_dict()["arch"] == "gpt"


def _cli(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_a_grid_trains_each_architecture_and_fits_each(tmp_path):
    store = tmp_path / "s"
    grid = ["--budget", "3e9,1e10", "--n-sizes", "3", "--epochs", "1", "--store", store, "--quiet",
            "--eval-tokens", "16384"]      # a small validation window: the test is about training and fitting
    for arch in ("gpt", "mamba"):
        proc = _cli("runners.isoflop", *grid, "--arch", arch, "--activation", "swelu" if arch == "mamba" else "gelu")
        assert proc.returncode == 0, proc.stderr[-3000:]
    from scaling import store as rstore
    runs = rstore.read_runs(store)
    assert sorted(runs["arch"].value_counts().items()) == [("gpt", 6), ("mamba", 6)]
    assert (runs["status"] == "ok").all() and set(runs.loc[runs["arch"] == "mamba", "activation"]) == {"swelu"}
    mamba = runs[runs["arch"] == "mamba"]
    assert all(mamba["params"] == [accounting.mamba_param_count(r.d_model, r.ffw_size, r.n_layers, 256, 128, "swelu")
                                   for r in mamba.itertuples()])
    for _, by_budget in runs.groupby("budget"):       # equal FLOPs within a budget, whatever the arch
        assert by_budget["flops.6N"].max() / by_budget["flops.6N"].min() < 1.01
    for arch in ("gpt", "mamba"):
        out = tmp_path / f"{arch}.json"
        proc = _cli("scaling.fit", store, "--where", f"arch={arch}", "--law", "chinchilla", "--out", out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        fit = json.loads(out.read_text())
        assert fit["n_points"] == 6
        assert all(math.isfinite(float(v)) for v in fit["params"].values()), fit["params"]


def test_compare_reports_gpt_and_mamba_at_equal_flops(tmp_path):
    out = tmp_path / "cmp"
    proc = _cli("runners.compare", "--datasets", "text", "--ratio", "4", "--shape", "t24", "--arch", "gpt,mamba",
                "--batches", "0", "--eval-tokens", "4096", "--out", out, "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    models = {m["arch"]: m for m in result["models"]}
    assert set(models) == {"gpt", "mamba"}
    assert abs(models["gpt"]["flops"] / models["mamba"]["flops"] - 1) < 1e-3
    assert models["gpt"]["params"] != models["mamba"]["params"]
    for m in models.values():
        assert m["status"] == "ok" and m["cross_entropy"] < math.log(256)   # both learned something
