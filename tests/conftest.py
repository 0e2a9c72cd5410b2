"""Test-session settings: CPU training in fp32 on every machine, so that numerical comparisons
(resume, DeepSpeed against local, batched against one at a time) do not depend on whether the
CPU has native bf16 (``runners.train.cpu_dtype``; its own test sets and clears the variable)."""

import os

os.environ.setdefault("SCALING_CPU_DTYPE", "fp32")

# pytest-xdist workers (``-n auto``, pyproject.toml): each worker, and every process it starts
# (CLIs, launchers, DeepSpeed ranks), takes its share of the cores for torch and BLAS. Two
# processes of 2 OpenMP threads each on 2 cores spin against each other (runners.train.launch.
# sharing_cores). Set before torch is imported; a value already in the environment wins.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    _share = str(max(1, (os.cpu_count() or 1) // _workers))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

# Hypothesis (tests/test_properties.py): the same examples on every CI run, no example database
# written into the checkout; HYPOTHESIS_PROFILE=explore draws new and more examples for a sweep.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # only test_properties needs it, and it is a dev dependency
    pass
else:
    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=150)
    _hypothesis_settings.register_profile("explore", database=None, deadline=None, max_examples=3000)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
