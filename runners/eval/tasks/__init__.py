"""Offline lm-eval tasks (YAML + the document builders they name), read by ``runners.evaluate``."""
