"""The models a run trains: GPT (``gpt``), the Mamba + dense hybrid (``mamba``), the ``--arch``
registry and plug-ins (``arch``), and a finished run's saved weights (``files``)."""
