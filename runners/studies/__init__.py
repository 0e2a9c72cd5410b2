"""Studies built on the pipeline, never imported by it: datasets compared at equal compute
(``compare``), data diversity (``diversity``), the merging proxy for mixture ablations (``merge``)."""
