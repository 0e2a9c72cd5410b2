"""Test-session settings: CPU training in fp32 on every machine, so that numerical comparisons
(resume, DeepSpeed against local, batched against one at a time) do not depend on whether the
CPU has native bf16 (``runners.train.cpu_dtype``; its own test sets and clears the variable)."""

import os

os.environ.setdefault("SCALING_CPU_DTYPE", "fp32")
