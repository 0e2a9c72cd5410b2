"""The merging proxy (Na et al. 2024, "Scalable Data Ablation Approximations for Language Models
through Modular Training and Merging"): parameter averages are exact mixture arithmetic, and a
tiny seed + two experts score mixtures in the order their trained counterparts land in.

The arithmetic tests use a 1-layer, 16-wide model; the end-to-end test a t32 (38K parameters,
byte tokenizer) trained 200 + 80 steps of 4 x 128 tokens, ~10 s on one busy core.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from runners.studies import merge
from runners.models.files import CONFIG_FILE, MODEL_FILE
from runners.models.gpt import GPT, GPTConfig
from runners.grid.spec import RunSpec
from scaling.cli import UsageError

TINY = GPTConfig(d_model=16, ffw_size=64, n_heads=2, n_layers=1, vocab_size=256, seq_len=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on two busy shared cores run tiny models ~30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int, cfg: GPTConfig = TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def tiny_spec(cfg: GPTConfig = TINY, code_fraction: float = 0.0) -> RunSpec:
    return RunSpec("t24", cfg.d_model, cfg.ffw_size, cfg.n_heads, cfg.n_layers, cfg.vocab_size, cfg.seq_len,
                   1000, 1000, code_fraction=code_fraction)


def saved(tmp_path, name: str, seed: int, mixture: dict, cfg: GPTConfig = TINY, base="seed0"):
    return merge.save(tiny_model(seed, cfg), tiny_spec(cfg, mixture.get("code", 0.0)), tmp_path / name,
                      {"role": "continued", "mixture": mixture, "base": base})


def params_of(model: GPT) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def assert_same_params(a: GPT, b: GPT, atol=1e-6):
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].shape == pb[k].shape and pa[k].dtype == pb[k].dtype, k
        assert (pa[k] - pb[k]).abs().max().item() <= atol, k


def run_main(argv, capsys):
    from scaling.cli import run_cli

    code = run_cli(merge.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- merging arithmetic -------------------------------------------------------------------------


def test_a_merge_of_merges_equals_the_flat_merge():
    a, b, c = (tiny_model(s) for s in range(3))
    ab = merge.merge_models([a, b], [0.5, 0.5])
    nested = merge.merge_models([ab, c], [2 / 3, 1 / 3])
    flat = merge.merge_models([a, b, c], [1 / 3, 1 / 3, 1 / 3])
    assert_same_params(nested, flat)
    # and it is the average: theta = (theta_a + theta_b + theta_c) / 3
    expected = (a.blocks[0].mlp.c_fc.weight + b.blocks[0].mlp.c_fc.weight + c.blocks[0].mlp.c_fc.weight) / 3
    assert (flat.blocks[0].mlp.c_fc.weight - expected).abs().max().item() <= 1e-6


def test_tied_embedding_stays_tied_after_merging():
    merged = merge.merge_models([tiny_model(0), tiny_model(1)], [0.3, 0.7])
    assert merged.lm_head.weight is merged.wte.weight


def test_a_pure_mixture_is_its_expert_exactly():
    a, b = tiny_model(0), tiny_model(1)
    assert_same_params(merge.merge_models([a, b], [1.0, 0.0]), a, atol=0)


def test_weights_are_mixture_proportions_that_sum_to_one():
    assert merge.parse_weights("1/3,1/3,1/3") == pytest.approx([1 / 3] * 3)
    assert merge.parse_weights("0.333,0.333,0.334") == pytest.approx([0.333, 0.333, 0.334])
    for bad in ("0.3,0.6", "0.5,0.6", "-0.5,1.5", "nan,1", "a,b", ""):
        with pytest.raises(UsageError):
            merge.parse_weights(bad)
    with pytest.raises(UsageError, match="2 weight"):
        merge.check_weights([0.5, 0.5], 3)
    with pytest.raises(UsageError, match="sum to"):
        merge.merge_models([tiny_model(0), tiny_model(1)], [0.5, 0.4])


def test_merged_directories_record_their_mixture_so_merges_of_merges_are_merges(tmp_path, capsys):
    a = saved(tmp_path, "a", 0, {"code": 0.0, "text": 1.0})
    b = saved(tmp_path, "b", 1, {"code": 1.0, "text": 0.0})
    c = saved(tmp_path, "c", 2, {"code": 0.5, "text": 0.5})
    assert run_main(["merge", "--models", f"{a},{b}", "--weights", "0.5,0.5", "--out", str(tmp_path / "ab")],
                    capsys)[0] == 0
    assert run_main(["merge", "--models", f"{tmp_path / 'ab'},{c}", "--weights", "2/3,1/3",
                     "--out", str(tmp_path / "ab_c")], capsys)[0] == 0
    assert run_main(["merge", "--models", f"{a},{b},{c}", "--weights", "1/3,1/3,1/3",
                     "--out", str(tmp_path / "flat")], capsys)[0] == 0
    nested, flat = merge.load(tmp_path / "ab_c"), merge.load(tmp_path / "flat")
    assert_same_params(nested.model, flat.model)
    assert nested.mixture == pytest.approx(flat.mixture)
    assert flat.mixture == pytest.approx({"code": 0.5, "text": 0.5})
    assert nested.lineage["role"] == "merged" and nested.lineage["base"] == "seed0"
    assert [s["weight"] for s in nested.lineage["sources"]] == pytest.approx([2 / 3, 1 / 3])
    assert nested.spec.code_fraction == pytest.approx(0.5)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == [CONFIG_FILE, MODEL_FILE]


# -- bad input: one error line, exit 2 (usage) or 1 (the models given), nothing written ------------------------------------------


def _assert_one_error(code, err, pattern, exit_code=2):
    assert code == exit_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], err


def test_weights_not_summing_to_one_are_refused_before_anything_is_written(tmp_path, capsys):
    a, b = saved(tmp_path, "a", 0, {"text": 1.0}), saved(tmp_path, "b", 1, {"code": 1.0})
    out = tmp_path / "out"
    code, _, err = run_main(["merge", "--models", f"{a},{b}", "--weights", "0.3,0.6", "--out", str(out)], capsys)
    _assert_one_error(code, err, "sum to 0.9")
    code, _, err = run_main(["merge", "--models", f"{a},{b}", "--weights", "1", "--out", str(out)], capsys)
    _assert_one_error(code, err, "1 weight(s) for 2 model(s)")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_mismatched_architectures_are_refused(tmp_path, capsys):
    wide = GPTConfig(d_model=32, ffw_size=64, n_heads=2, n_layers=1, vocab_size=256, seq_len=32)
    a = saved(tmp_path, "a", 0, {"text": 1.0})
    b = saved(tmp_path, "b", 1, {"code": 1.0}, cfg=wide)
    out = tmp_path / "out"
    code, _, err = run_main(["merge", "--models", f"{a},{b}", "--weights", "0.5,0.5", "--out", str(out)], capsys)
    _assert_one_error(code, err, "different architectures (d_model 16 vs 32)", 1)
    assert not out.exists()


def test_a_missing_model_directory_is_refused(tmp_path, capsys):
    a = saved(tmp_path, "a", 0, {"text": 1.0})
    out = tmp_path / "out"
    code, _, err = run_main(["merge", "--models", f"{a},{tmp_path / 'nope'}", "--weights", "0.5,0.5",
                             "--out", str(out)], capsys)
    _assert_one_error(code, err, "does not exist", 1)
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["merge", "--models", f"{a},{tmp_path / 'empty'}", "--weights", "0.5,0.5",
                             "--out", str(out)], capsys)
    _assert_one_error(code, err, "holds no saved model", 1)
    assert not out.exists()


def test_an_existing_output_is_not_overwritten(tmp_path, capsys):
    a, b = saved(tmp_path, "a", 0, {"text": 1.0}), saved(tmp_path, "b", 1, {"code": 1.0})
    code, _, err = run_main(["merge", "--models", f"{a},{b}", "--weights", "0.5,0.5", "--out", str(a)], capsys)
    _assert_one_error(code, err, "not an empty directory")


def test_unknown_domains_and_bad_mixtures_are_refused(tmp_path, capsys):
    a = saved(tmp_path, "a", 0, {"text": 1.0})
    code, _, err = run_main(["expert", "--from", str(a), "--domain", "wiki", "--out", str(tmp_path / "x")], capsys)
    _assert_one_error(code, err, "unknown domain 'wiki'")
    code, _, err = run_main(["score", "--experts", f"text={a},wiki={a}", "--quiet"], capsys)
    _assert_one_error(code, err, "unknown domain 'wiki'")
    code, _, err = run_main(["run", "--mixtures", "0,1.5", "--quiet"], capsys)
    _assert_one_error(code, err, "outside [0, 1]")
    code, _, err = run_main(["run", "--shape", "t7", "--quiet"], capsys)
    _assert_one_error(code, err, "unknown shape")
    code, _, err = run_main(["run", "--target", "text=0.5,wiki=0.5", "--steps", "1", "--seed-steps", "0",
                             "--quiet"], capsys)
    _assert_one_error(code, err, "unknown domain 'wiki'")
    assert not (tmp_path / "x").exists()


def test_help_ends_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        merge.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "python -m runners.merge run" in out and "Na et al. 2024" in out


@pytest.mark.slow
def test_seed_and_expert_commands_write_models_linked_by_their_lineage(tmp_path, capsys):
    seed_dir, text_dir, code_dir = tmp_path / "seed", tmp_path / "text", tmp_path / "code"
    assert run_main(["seed", "--shape", "t24", "--steps", "4", "--out", str(seed_dir), "--quiet"], capsys)[0] == 0
    for domain, out in (("text", text_dir), ("code", code_dir)):
        code, stdout, err = run_main(["expert", "--from", str(seed_dir), "--domain", domain, "--steps", "4",
                                      "--out", str(out), "--quiet"], capsys)
        assert code == 0, err
        assert stdout.strip() == str(out)
    seed, text, code_ = merge.load(seed_dir), merge.load(text_dir), merge.load(code_dir)
    assert seed.lineage["role"] == "seed" and seed.mixture == {"code": 0.5, "text": 0.5}
    assert text.lineage["base"] == code_.lineage["base"] == seed.lineage["fingerprint"]
    assert text.mixture == {"code": 0.0, "text": 1.0} and code_.mixture == {"code": 1.0, "text": 0.0}
    # experts continue at a fraction of the seed's peak LR (CONTINUE_LR_RATIO)
    assert text.lineage["training"]["lr"] == pytest.approx(merge.CONTINUE_LR_RATIO * seed.lineage["training"]["lr"])
    code, stdout, err = run_main(["score", "--experts", f"text={text_dir},code={code_dir}", "--mixtures", "0,1/3,1",
                                  "--eval-tokens", "1024", "--json", "--quiet"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert [r["code_share"] for r in report["proxy"]] == pytest.approx([0, 1 / 3, 1])
    assert report["trained"] is None


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """A t32 seed (200 steps on a 50% code mix), a text and a code expert and one trained mixture
    (80 steps each from the seed), 16K validation tokens per domain: (config, out directory,
    report). Shorter runs or fewer tokens (60 + 30 steps, 4K tokens) leave the experts' code losses
    within noise of each other. The corpus cache is the default one, shared with the other tests
    (building the embedded corpus afresh takes ~30 s)."""
    out = tmp_path_factory.mktemp("merge")
    cfg = merge.ProxyConfig(shape="t32", seed_steps=200, steps=80, batch_size=4, mixtures=(0.0, 0.5, 1.0),
                            eval_tokens=16384)
    report = merge.run(cfg, out)
    return cfg, out, report


@pytest.mark.slow
def test_the_proxy_ranks_mixtures_and_reports_rank_statistics(tiny_experiment):
    cfg, out, report = tiny_experiment
    assert set(report.agreement) == {"loss.code", "loss.text", "loss", "target_loss"}
    for stats in report.agreement.values():
        for k in ("spearman", "kendall", "decision_accuracy"):
            assert -1.0 <= stats[k] <= 1.0, (k, stats)
    proxy = report.proxy.set_index("code_share")
    # the code expert (share 1) knows code better than the text expert (share 0)
    assert proxy.loc[1.0, "loss.code"] < proxy.loc[0.0, "loss.code"]
    assert proxy.loc[0.0, "loss.text"] < proxy.loc[1.0, "loss.text"]
    # pure mixtures are the experts themselves: proxy and trained agree exactly there
    trained = report.trained.set_index("code_share")
    for share in (0.0, 1.0):
        assert proxy.loc[share, "loss"] == pytest.approx(trained.loc[share, "loss"], abs=1e-9)
    # the store's columns, the mix summing to 1, and the mix-weighted loss
    row = proxy.loc[0.5]
    assert row["mix.code"] + row["mix.text"] == pytest.approx(1.0)
    assert row["loss"] == pytest.approx(0.5 * row["loss.code"] + 0.5 * row["loss.text"])
    assert all(math.isfinite(v) for v in proxy[["loss.code", "loss.text", "loss", "target_loss"]].to_numpy().ravel())
    # what was written: models, merged proxies, table and report
    assert {p.name for p in (out / "models").iterdir()} == {"seed", "text", "code", "code0.5"}
    assert {p.name for p in (out / "merged").iterdir()} == {"code0", "code0.5", "code1"}
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["source"].unique()) == ["proxy", "trained"] and len(table) == 6
    again = merge.ProxyReport.from_json((out / "report.json").read_text())
    assert again.agreement == report.agreement


@pytest.mark.slow
def test_a_rerun_reuses_the_saved_models(tiny_experiment, capsys):
    cfg, out, report = tiny_experiment
    again = merge.run(cfg, out, progress=True)
    assert "reusing" in capsys.readouterr().err
    pd.testing.assert_frame_equal(again.trained.drop(columns="eval_s", errors="ignore"),
                                        report.trained.drop(columns="eval_s", errors="ignore"))


@pytest.mark.slow
def test_the_saved_proxy_is_the_merge_of_the_saved_experts(tiny_experiment):
    _, out, _ = tiny_experiment
    text, code = merge.load(out / "models" / "text"), merge.load(out / "models" / "code")
    half = merge.load(out / "merged" / "code0.5")
    assert_same_params(half.model, merge.merge_models([code.model, text.model], [0.5, 0.5]))
    assert half.mixture == pytest.approx({"code": 0.5, "text": 0.5})
    assert half.lineage["base"] == merge.load(out / "models" / "seed").lineage["fingerprint"]


@pytest.mark.slow
def test_validate_reproduces_the_one_shot_run(tiny_experiment, tmp_path, capsys):
    cfg, out, report = tiny_experiment
    models = out / "models"
    code, stdout, err = run_main(["validate", "--seed", str(models / "seed"),
                                  "--experts", f"text={models / 'text'},code={models / 'code'}",
                                  "--mixtures", "0,0.5,1", "--eval-tokens", "16384", "--quiet", "--json",
                                  "--out", str(tmp_path / "v")], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    got = {r["code_share"]: r["loss"] for r in result["trained"]}
    want = dict(zip(report.trained["code_share"], report.trained["loss"]))
    assert got == pytest.approx(want, abs=1e-6)  # same seed, data, order and settings
    assert (tmp_path / "v" / "report.json").exists()


@pytest.mark.slow
def test_the_proxy_takes_any_number_of_domains(tmp_path):
    """On the seven-domain embedded corpus: one expert per domain from one seed, the proxy of every
    pure domain, the uniform mix and Dirichlet draws, the non-pure ones trained, and rank statistics
    over them; a pure mixture's proxy is its expert exactly."""
    cfg = merge.ProxyConfig(shape="t24", seed_steps=40, steps=20, batch_size=4, eval_tokens=4096,
                            data="embedded-domains")
    report = merge.run(cfg, tmp_path)
    domains = report.domains
    assert len(domains) == 7 and len(report.proxy) == 7 + 1 + 4
    proxy, trained = report.proxy.set_index("mixture"), report.trained.set_index("mixture")
    for d in domains:
        key = f"{d}=1"
        assert proxy.loc[key, "loss"] == pytest.approx(trained.loc[key, "loss"], abs=1e-9)
        assert proxy.loc[key, f"mix.{d}"] == 1.0
    uniform = proxy.loc[[k for k in proxy.index if k.count(",") == 6 and "0.142857" in k][0]]
    assert sum(uniform[f"mix.{d}"] for d in domains) == pytest.approx(1.0)
    assert set(report.agreement) == {*(f"loss.{d}" for d in domains), "loss", "target_loss"}
    assert {p.name for p in (tmp_path / "models").iterdir()} >= {"seed", *domains}
    with pytest.raises(UsageError, match="DOMAIN=SHARE"):      # a code share means nothing here
        merge.mixture_of(merge.Data("embedded-domains").corpus, 0.5)
