"""Plans as data: a run's frozen ``RunSpec`` (``spec``), the isoFLOP / isoUniqueData / mixture grids
that enumerate them (``plan``), and the grid commands (``isoflop``, ``isounique``, ``mixgrid``) with
the options, dry-run table and launch they share (``command``)."""
