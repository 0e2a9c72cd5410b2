"""Training: the one Trainer and its hyper-parameters (``trainer``), K runs at once with torch.func
(``batched``), DeepSpeed processes (``distributed``), the CPU's bf16 decision (``cpu_dtype``), and the
launchers that run a plan here, in worker processes or on Slurm (``launch``)."""
