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
    {"scaling.errors", "scaling.cli", "scaling.intervals", "scaling.optimal_design", "scaling.humanise", "scaling.accounting", "scaling.columns", "scaling.datasets",
     "scaling.datasets.__main__", "scaling.scripts", "scaling", "scaling.version", "scaling.store", "scaling.store.files", "scaling.store.runs",
     "scaling.store.side", "scaling.store.check", "scaling.store.tables", "scaling.store.cli", "scaling.store.__main__",
     "scaling.sources",
     "scaling.schemas"},
    {"scaling.fit.solver", "scaling.results", "scaling.fit.variants", "scaling.laws", "scaling.laws.base",
     "scaling.laws.chinchilla", "scaling.laws.data_constrained", "scaling.laws.kaplan", "scaling.laws.mixture", "scaling.fit",
     "scaling.fit.objective", "scaling.fit.diagnostics", "scaling.fit.data", "scaling.fit.approach3", "scaling.fit.cli",
     "scaling.fit.__main__",
     "scaling.fit.approach1", "scaling.fit.approach2", "scaling.mixture.law_fit", "scaling.mixture.models", "scaling.mixture",
     "scaling.mixture.__main__", "scaling.mixture.runs", "scaling.mixture.result", "scaling.mixture.predict",
     "scaling.mixture.fit", "scaling.mixture.optimize", "scaling.mixture.transfer", "scaling.mixture.cli",
     "scaling.laws.downstream", "scaling.laws.mixture_scale", "scaling.downstream", "scaling.downstream.__main__", "scaling.downstream.data",
     "scaling.downstream.result", "scaling.downstream.fit", "scaling.downstream.cli", "scaling.downstream.synthetic",
     "scaling.mixture.synthetic"},
    {"scaling.predict", "scaling.backtest", "scaling.design", "scaling.mixture.design"},
    {"scaling.plot"},
]
#: ``runners``, in data-flow order: plans, data, models, training, evaluation, then the commands;
#: studies apart. A folder is a room (``runners.grid`` holds the plans and, a stage later, the grid
#: commands that use everything before them).
RUNNER_STAGES = [
    {"runners", "runners.grid", "runners.grid.spec", "runners.grid.plan"},
    {"runners.data", "runners.data.cache", "runners.data.tokenizers", "runners.data.corpus", "runners.data.streams",
     "runners.data.filters", "runners.data.mixing", "runners.data.batches"},
    {"runners.models", "runners.models.gpt", "runners.models.mamba", "runners.models.arch", "runners.models.files",
     "runners.models.device"},
    {"runners.train", "runners.train.cpu_dtype", "runners.train.options", "runners.train.settings", "runners.train.evaluation",
     "runners.train.engines", "runners.train.trainer", "runners.train.batched",
     "runners.train.distributed", "runners.train.launch"},
    {"runners.eval", "runners.eval.tasks", "runners.eval.tasks.cloze", "runners.eval.evaluate",
     "runners.eval.generate", "runners.eval.export", "runners.eval.along"},
    {"runners.grid.command", "runners.grid.isoflop", "runners.grid.isounique", "runners.grid.mixgrid",
     "runners.isoflop", "runners.isounique", "runners.mixgrid", "runners.evaluate", "runners.generate",
     "runners.export", "runners.scripts"},
]
STUDIES = {"runners.studies", "runners.studies.compare", "runners.studies.diversity",
           *(m for m in MODULES if m.startswith("runners.studies.merge")),
           "runners.compare", "runners.merge", "runners.diversity"}
#: the commands: ``python -m runners.X`` for each X, each a few lines naming where it lives
COMMANDS = {"isoflop", "isounique", "mixgrid", "evaluate", "generate", "export", "compare", "diversity", "merge"}


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


def _internal_all(m: str) -> set[str]:
    top, lazy = GRAPH[m]
    return {i for i in top | lazy if i in MODULES and i != m}


def test_there_are_no_import_circles():
    """Not even through imports inside functions: a lazy import that closes a circle is a circle
    waiting for the first caller that imports the other end at module level."""
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(_internal_all(m)):
            assert state.get(n) != 1, " -> ".join([*path[path.index(n):], n]) if n in path else n
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_the_top_level_of_runners_holds_only_commands():
    """A newcomer sees the commands at ``runners/`` and one folder per room: every top-level module
    but ``scripts`` is a command of a few lines that runs ``main`` of the module it names."""
    top = {p.stem for p in (ROOT / "runners").glob("*.py")} - {"__init__", "scripts"}
    assert top == COMMANDS
    for name in COMMANDS:
        text = (ROOT / "runners" / f"{name}.py").read_text()
        target = next(i for i in _imports(ROOT / "runners" / f"{name}.py")[0] if i.startswith("runners."))
        assert target.endswith(f".{name}") and target in MODULES, (name, target)
        assert "__main__" in text and len(text.splitlines()) <= 12, name


def test_one_module_owns_the_loop_and_the_life_of_a_run():
    """``runners.train.trainer`` owns the loop (``Trainer.train``: the LR schedule, the training
    logs) and a run's life (``train_runs``: claim, data, resume, evaluation along training, the row,
    the end: validated and stored ``ok``, or ``failed``, then the checkpoint dropped); the engines
    (local, stacked, DeepSpeed) only build, step, checkpoint and hand out their models. No engine
    calls what the life of a run is made of, and none loops over steps."""
    life = {"lr_at", "TrainingLog", "run_row", "finish_run", "store_finished_run", "store_failed_run",
            "validation_metrics", "prepare_data", "claim_run", "CheckpointScorer", "write_run"}
    for engine in ("runners.train.engines", "runners.train.batched", "runners.train.distributed"):
        tree = ast.parse(MODULES[engine].read_text())
        called = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                  for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not called & life, (engine, sorted(called & life))
        loops = [n for n in ast.walk(tree) if isinstance(n, ast.For) and isinstance(n.target, ast.Name)
                 and n.target.id == "step"]
        assert not loops, engine
        assert "train_runs" in called or engine == "runners.train.engines", engine
    tree = ast.parse(MODULES["runners.train.trainer"].read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert any(isinstance(n, ast.For) and getattr(n.target, "id", "") == "step" for n in ast.walk(trainer))