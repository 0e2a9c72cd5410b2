"""After training: lm-eval scores for stored runs (``evaluate``, with the offline ``tasks``), samples
from a saved model (``generate``), and a run's weights copied out of the store (``export``).
Never ``from runners import eval``: the name would hide the builtin."""
