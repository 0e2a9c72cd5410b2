"""Plan and run training grids. Every module at this level is a command (``python -m runners.X``,
the same ``main`` as the ``scaling-X`` console script); every folder is one room, in data-flow order:

* ``grid``: plans as data (``RunSpec``, the grids) and the grid commands' shared options;
* ``data``: corpora, tokenizers, filters, mixtures, epoch batches;
* ``models``: GPT, the Mamba hybrid, ``--arch`` plug-ins, saved weights;
* ``train``: the Trainer, batched and DeepSpeed runs, launchers (local, workers, Slurm);
* ``eval``: lm-eval scores, generation, export;
* ``studies``: compare, diversity, merge (built on the rest; nothing imports them).
"""
