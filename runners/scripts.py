"""Console scripts of the runners (``scaling-isoflop``, ``scaling-isounique``, ...); see
``scaling.scripts``."""

from scaling.scripts import entry

isoflop = entry("runners.isoflop")
isounique = entry("runners.isounique")
mixgrid = entry("runners.mixgrid")
evaluate = entry("runners.evaluate")
export = entry("runners.export")
generate = entry("runners.generate")
compare = entry("runners.compare")
merge = entry("runners.merge")
diversity = entry("runners.diversity")
