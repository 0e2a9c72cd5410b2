"""GPU readiness in one prepared call: prints one JSON line (issue 12, item 4).

Steps, each with its own time limit, each reported as ok / failed / skipped with its figures:

1. ``device``: torch version, device name, bf16 and fp32 matmul peaks (8192^3 products).
2. ``train_speed``: ``benchmarks/train_speed.py`` at ~125M parameters (d 768, 12 layers, 1024
   context, GPT-2 vocabulary, batch 16), bf16 autocast + ``torch.compile``: tokens/s and MFU
   against the measured bf16 peak (goal on an H100-class GPU: >= 45%).
3. ``smoke``: the smoke isoFLOP grid trained with ``--device cuda`` into a fresh store.
4. ``stacked``: 8 same-shape t32 runs stacked in one process (``--batch-runs 8``, the stacked engine).
5. ``eval_along``: the smoke grid's first runs scored along training (``--eval corpus_cloze
   --eval-every 25``): checkpoint rows in the store's ``_evals/``.
6. ``deepspeed``: one smoke run through the real DeepSpeed launcher on 1 GPU (NCCL).
7. ``evaluate``: ``runners.evaluate --device cuda`` on the smoke store (offline cloze tasks).

Nothing is fetched: a step whose package is missing on the machine (lm-eval, deepspeed) is
``skipped`` with the reason. ``--device cpu --small`` runs the same plumbing here (tiny model,
no compile) so the script is tested without a GPU.

    bash benchmarks/gpu_check.sh                 # on the GPU machine; one JSON line
    python benchmarks/gpu_check.py --device cpu --small --skip deepspeed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("device", "train_speed", "smoke", "stacked", "eval_along", "deepspeed", "evaluate")


def sh(args, timeout, env=None):
    """(returncode, stdout, stderr tail, seconds) of a command; 124 on timeout."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        return p.returncode, p.stdout, p.stderr[-1500:], time.perf_counter() - t0
    except subprocess.TimeoutExpired as exc:
        return 124, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), \
            "timed out", time.perf_counter() - t0


def last_json(text: str):
    """The command's JSON output: the whole stdout, else its last line that parses."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def device_step(device: str) -> dict:
    code = (
        "import json, time, torch\n"
        f"dev = {device!r}\n"
        "out = {'torch': torch.__version__, 'cuda': torch.cuda.is_available()}\n"
        "if dev.startswith('cuda'):\n"
        "    out['name'] = torch.cuda.get_device_name(0)\n"
        "    n = 8192\n"
        "    for dt, key in ((torch.bfloat16, 'bf16_peak_flops'), (torch.float32, 'fp32_peak_flops')):\n"
        "        a = torch.randn(n, n, device=dev, dtype=dt); b = torch.randn(n, n, device=dev, dtype=dt)\n"
        "        for _ in range(3): a @ b\n"
        "        torch.cuda.synchronize(); t = time.perf_counter()\n"
        "        for _ in range(10): a @ b\n"
        "        torch.cuda.synchronize(); out[key] = 10 * 2 * n ** 3 / (time.perf_counter() - t)\n"
        "print(json.dumps(out))\n")
    rc, out, err, secs = sh([sys.executable, "-c", code], 180)
    return {"status": "ok" if rc == 0 else "failed", "seconds": round(secs, 1), **(last_json(out) or {"error": err})}


def train_speed_step(device: str, small: bool) -> dict:
    if small:
        args = ["--d-model", "64", "--n-layers", "2", "--seq-len", "128", "--vocab", "256", "--batch", "8",
                "--seconds", "1", "--rounds", "1"]
    else:
        args = ["--d-model", "768", "--n-layers", "12", "--seq-len", "1024", "--vocab", "50257", "--batch", "16",
                "--try-compile", "--seconds", "8", "--rounds", "2"]
    rc, out, err, secs = sh([sys.executable, "benchmarks/train_speed.py", "--device", device, *args, "--json"], 420)
    res = last_json(out) or {}
    keep = {k: res[k] for k in ("tokens_per_s", "params", "settings", "model_flops_per_s",
                                "fraction_of_bf16_peak", "fraction_of_fp32_peak", "ratio", "reference_tokens_per_s",
                                "candidates_tokens_per_s", "compile_warmup_s") if k in res}
    if "fraction_of_bf16_peak" in res:
        keep["mfu_bf16"] = res["fraction_of_bf16_peak"]
    return {"status": "ok" if rc == 0 else "failed", "seconds": round(secs, 1), **keep,
            **({} if rc == 0 else {"error": err})}


def smoke_step(device: str, store: Path) -> dict:
    rc, out, err, secs = sh([sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--device", device,
                             "--store", str(store), "--json", "--quiet"], 420)
    res = last_json(out) or {}
    return {"status": "ok" if rc == 0 and not res.get("failed") else "failed", "seconds": round(secs, 1),
            "trained": len(res.get("trained", [])), "failed": len(res.get("failed", [])),
            **({} if rc == 0 else {"error": err})}


def stacked_step(device: str, store: Path) -> dict:
    """The stacked engine: 8 seeds of one t32 run in one process."""
    rc, out, err, secs = sh([sys.executable, "-m", "runners.isounique", "--unique", "200K", "--sizes", "t32",
                             "--epochs", "1", "--seeds", "0,1,2,3,4,5,6,7", "--batch-runs", "8", "--workers", "1",
                             "--device", device, "--store", str(store), "--json", "--quiet"], 420)
    res = last_json(out) or {}
    return {"status": "ok" if rc == 0 and len(res.get("trained", [])) == 8 else "failed", "seconds": round(secs, 1),
            "trained": len(res.get("trained", [])), **({} if rc == 0 else {"error": err})}


def eval_along_step(device: str, store: Path) -> dict:
    """Evaluation along training, the Trainer's hook: checkpoint rows of the first two smoke runs."""
    if not have("lm_eval"):
        return {"status": "skipped", "reason": "lm-eval is not installed here (carry its wheel)"}
    rc, out, err, secs = sh([sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--limit", "2",
                             "--eval", "corpus_cloze", "--eval-every", "25", "--eval-limit", "40", "--device", device,
                             "--store", str(store), "--json", "--quiet"], 420)
    rows = 0
    if rc == 0:
        code = ("import sys; from scaling.store import read_checkpoint_evals; "
                "print(len(read_checkpoint_evals(sys.argv[1])))")
        rc2, n, err2, _ = sh([sys.executable, "-c", code, str(store)], 120)
        rows = int(n.strip() or 0) if rc2 == 0 else 0
    return {"status": "ok" if rc == 0 and rows > 2 else "failed", "seconds": round(secs, 1), "checkpoint_rows": rows,
            **({} if rc == 0 else {"error": err})}


def have(module: str) -> bool:
    rc, _, _, _ = sh([sys.executable, "-c", f"import {module}"], 120)
    return rc == 0


def deepspeed_step(device: str, store: Path) -> dict:
    if not have("deepspeed"):
        return {"status": "skipped", "reason": "deepspeed is not installed here (carry its wheel)"}
    rc, out, err, secs = sh([sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--launcher", "deepspeed",
                             "--nproc-per-node", "1", "--device", device, "--store", str(store), "--limit", "1",
                             "--json", "--quiet"], 420)
    res = last_json(out) or {}
    return {"status": "ok" if rc == 0 and res.get("trained") else "failed", "seconds": round(secs, 1),
            "trained": len(res.get("trained", [])), **({} if rc == 0 else {"error": err})}


def evaluate_step(device: str, store: Path) -> dict:
    if not have("lm_eval"):
        return {"status": "skipped", "reason": "lm-eval is not installed here (carry its wheel)"}
    rc, out, err, secs = sh([sys.executable, "-m", "runners.evaluate", "--store", str(store), "--tasks",
                             "corpus_cloze,code_cloze", "--limit", "100", "--device", device, "--json"], 300)
    res = last_json(out)
    accs = [v.get("eval.corpus_cloze.acc") for v in (res or {}).values() if isinstance(v, dict)] if isinstance(res, dict) else []
    return {"status": "ok" if rc == 0 and accs else "failed", "seconds": round(secs, 1), "runs_scored": len(accs),
            "corpus_cloze_acc": accs, **({} if rc == 0 else {"error": err})}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  bash benchmarks/gpu_check.sh\n"
                                       "  python benchmarks/gpu_check.py --device cpu --small --skip deepspeed")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="a tiny model for train_speed (plumbing check)")
    p.add_argument("--skip", default="", help=f"comma list of steps to skip ({', '.join(STEPS)})")
    args = p.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    t0 = time.perf_counter()
    out = {"check": "gpu_check", "device_arg": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        smoke, ds, stacked, along = (Path(tmp) / n for n in ("smoke", "ds", "stacked", "along"))
        runs = {"device": lambda: device_step(args.device),
                "train_speed": lambda: train_speed_step(args.device, args.small),
                "smoke": lambda: smoke_step(args.device, smoke),
                "stacked": lambda: stacked_step(args.device, stacked),
                "eval_along": lambda: eval_along_step(args.device, along),
                "deepspeed": lambda: deepspeed_step(args.device, ds),
                "evaluate": lambda: evaluate_step(args.device, smoke)}
        for step in STEPS:
            if step in skip:
                out[step] = {"status": "skipped", "reason": "--skip"}
                continue
            try:
                out[step] = runs[step]()
            except Exception as exc:      # one broken step must not lose the others' figures
                out[step] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            print(f"{step}: {out[step].get('status')}", file=sys.stderr, flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["ok"] = all(out[s]["status"] in ("ok", "skipped") for s in STEPS)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
