"""The package's import structure, read from the source (``ast``, nothing imported): data flows one
way (plan -> run -> store -> fit -> predict -> plot), so no module imports one of a later stage at
module level; ``scaling`` never imports ``runners`` or ``torch``, not even lazily; the pipeline never
imports a study; and there are no import circles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling", "runners", "fits")


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level imports, imports inside functions), as module names."""
    top, lazy = set(), set()

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in MODULES else child.module
                         for a in child.names]
            (lazy if in_function else top).update(names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return top, lazy


GRAPH = {m: _imports(p) for m, p in MODULES.items()}


def _internal_top(m: str) -> set[str]:
    return {i for i in GRAPH[m][0] if i in MODULES}


#: The stages of ``scaling``, in data-flow order; a module may import its own or earlier stages.
SCALING_STAGES = [
    {"scaling.errors", "scaling.cli", "scaling.intervals", "scaling.humanise", "scaling.accounting", "scaling.columns", "scaling.datasets",
     "scaling.datasets.__main__", "scaling.scripts", "scaling", "scaling.store"},
    {"scaling.optimize", "scaling.results", "scaling.variants", "scaling.laws", "scaling.laws.base",
     "scaling.laws.chinchilla", "scaling.laws.data_constrained", "scaling.laws.mixture", "scaling.fit",
     "scaling.approach1", "scaling.approach2", "scaling.mixing_fit", "scaling.mixture_models", "scaling.mixture",
     "scaling.mixture.__main__", "scaling.mixture.runs", "scaling.mixture.result", "scaling.mixture.predict",
     "scaling.mixture.fit", "scaling.mixture.optimize", "scaling.mixture.transfer", "scaling.mixture.cli"},
    {"scaling.predict", "scaling.backtest"},
    {"scaling.plot"},
]
#: ``runners``: plan, then run (data, models, training, launching), then the CLIs; studies apart.
RUNNER_STAGES = [
    {"runners", "runners.spec", "runners.plan"},
    {"runners.data", "runners.data.cache", "runners.data.tokenizers", "runners.data.corpus", "runners.data.streams",
     "runners.data.filters", "runners.data.mixing", "runners.data.batches", "runners.model", "runners.mamba", "runners.arch", "runners.cpu_dtype", "runners.tasks",
     "runners.tasks.cloze", "runners.train", "runners.export", "runners.batched", "runners.distributed",
     "runners.launch", "runners.evaluate", "runners.generate"},
    {"runners.common", "runners.isoflop", "runners.isounique", "runners.mixgrid", "runners.scripts"},
]
STUDIES = {"runners.compare", "runners.merge", "runners.diversity"}


def test_every_module_has_a_stage():
    staged = set().union(*SCALING_STAGES, *RUNNER_STAGES, STUDIES, {"fits"})
    assert set(MODULES) == staged, set(MODULES) ^ staged


def test_scaling_never_imports_runners_or_torch():
    bad = {m: sorted(i for i in top | lazy if i.split(".")[0] in ("runners", "torch"))
           for m, (top, lazy) in GRAPH.items() if m.split(".")[0] in ("scaling", "fits")}
    assert not {m: v for m, v in bad.items() if v}


def test_no_module_imports_one_of_a_later_stage():
    for stages in (SCALING_STAGES, RUNNER_STAGES):
        rank = {m: i for i, stage in enumerate(stages) for m in stage}
        for m in rank:
            later = {i for i in _internal_top(m) if rank.get(i, -1) > rank[m]}
            assert not later, f"{m} (stage {rank[m]}) imports {sorted(later)} of a later stage"


def test_the_pipeline_never_imports_a_study():
    pipeline = set().union(*RUNNER_STAGES)
    for m in pipeline:
        top, lazy = GRAPH[m]
        assert not (top | lazy) & STUDIES, (m, sorted((top | lazy) & STUDIES))


def test_there_are_no_import_circles():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(_internal_top(m)):
            assert state.get(n) != 1, " -> ".join([*path[path.index(n):], n]) if n in path else n
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
