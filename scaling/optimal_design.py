"""The arithmetic of optimal experimental design that ``scaling.design`` (scaling laws) and
``scaling.mixture.design`` (mixtures) share: the linearised variance of a target (c-optimality) and
the budgeted greedy that picks runs to lower it. Pure numpy."""

from __future__ import annotations

import numpy as np


SELECTION = ("greedy (Leskovec et al. 2007's budgeted form): the better of picking, one at a time, the candidate "
             "with the largest fall of the target's linearised variance per FLOP, or the largest fall within the budget")


def target_variance(g: np.ndarray, info: np.ndarray) -> float:
    """g^T I^-1 g: the linearised variance of a target whose gradient in the parameters is ``g``."""
    try:
        return float(g @ np.linalg.solve(info + 1e-12 * np.eye(len(g)), g))
    except np.linalg.LinAlgError:
        return float(g @ np.linalg.pinv(info) @ g)


#: what a plan optimises: ``width``, the narrowest interval the budget buys (the better of both greedy
#: orders); ``per-flop``, the largest fall per FLOP (the greedy by fall per FLOP alone: cheap runs
#: first, often far less than the budget spent)
OBJECTIVES = ("width", "per-flop")


def budgeted_greedy(variance, start: np.ndarray, rows: np.ndarray, costs: np.ndarray, budget: float, k: int,
                    var0: float, objective: str = "width"):
    """Up to ``k`` candidates within ``budget`` FLOPs that most lower ``variance(information)``: each
    candidate i adds ``rows[i].T @ rows[i]`` ([r, p] rows of its Jacobian, already divided by the
    noise) to the information. The budgeted greedy of Leskovec et al. 2007 (CELF): the better of the
    greedy by fall of variance per FLOP and the greedy by fall, both within the budget. Each candidate
    is taken at most once (a runner trains a planned run once: the same spec twice is one run).
    ``objective="per-flop"`` keeps the first greedy only (``OBJECTIVES``).
    Returns (information after, FLOPs left, [(candidate index, its fall as a share of ``var0``)])."""
    adds = np.einsum("cri,crj->cij", rows, rows)

    def greedy(per_flop: bool):
        current, left, picks = start.copy(), budget, []
        for _ in range(k):
            var_now = variance(current)
            best, best_score = None, 0.0
            taken = {i for i, _ in picks}
            for i in range(len(costs)):
                if costs[i] > left or i in taken:
                    continue
                fall = var_now - variance(current + adds[i])
                score = fall / costs[i] if per_flop else fall
                if score > best_score:
                    best, best_score = i, score
            if best is None:
                break
            current = current + adds[best]
            left -= costs[best]
            picks.append((best, (var_now - variance(current)) / var0 if var0 > 0 else 0.0))
        return current, left, picks

    if objective == "per-flop":
        return greedy(True)
    return min((greedy(True), greedy(False)), key=lambda plan: variance(plan[0]))
