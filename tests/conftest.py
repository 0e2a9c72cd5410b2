"""Test-session settings: CPU training in fp32 on every machine, so that numerical comparisons
(resume, DeepSpeed against local, batched against one at a time) do not depend on whether the
CPU has native bf16 (``runners.train.cpu_dtype``; its own test sets and clears the variable)."""

import os

os.environ.setdefault("SCALING_CPU_DTYPE", "fp32")

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
