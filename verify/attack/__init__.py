"""Falsification: search the spec's input region for a violation, and re-check every find in float64.

    falsify(graph, spec, time_budget, seed=0) -> AttackResult   (PGD with restarts + sampling)
    verify_candidates(graph, spec, x) -> Counterexample | None  (the float64 soundness gate)
"""
from verify.attack.falsify import AttackResult, falsify
from verify.attack.recheck import Counterexample, execute64, verify_candidates

__all__ = ["AttackResult", "Counterexample", "execute64", "falsify", "verify_candidates"]
