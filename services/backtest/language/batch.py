"""Sweeps of a program: each indicator once per binding, the rest of the rules as a postfix
program that every trial runs inside the engine's parallel sweep (``engine.postfix``).

``compile_batch`` splits the distinct rules of a ``Program`` into leaves (the bar series and
the indicator calls an ``Evaluation`` shares, each with every argument below it) and glue,
emitted as ``postfix.Op`` codes. ``rule_inputs`` evaluates each leaf once per distinct
binding of the parameters it reads, with the evaluator's own closures (so its values, and
its ready bar, are the serial path's), and gives each trial its leaf rows, parameter values
and ready bar. ``ProgramSweep`` runs the trials; it answers None, for the caller's serial
path, when the leaf series would pass ``MAX_LEAF_CELLS`` or a binding does not evaluate.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.backtest.engine.analysis import SweepResult, sweep_rules
from services.backtest.engine.core import SimSpec
from services.backtest.engine.postfix import BINARY, UNARY, Op, RuleCode, RuleInputs
from services.backtest.engine.runner import Bars
from services.backtest.language.program import (
    Evaluation,
    Program,
    closure,
    params_of,
    shared,
    symbol_series,
)
from services.backtest.language.syntax import LanguageError, Node, render

# Leaf series a sweep may hold: 2**25 float64 values (256 MiB; 13,000 series of ten years of
# daily bars). Above it the serial path runs, one combination at a time.
MAX_LEAF_CELLS = 2**25

_OPERATORS: dict[str, Op] = {
    "+": Op.ADD,
    "-": Op.SUB,
    "*": Op.MUL,
    "/": Op.DIV,
    "<": Op.LT,
    "<=": Op.LE,
    ">": Op.GT,
    ">=": Op.GE,
    "==": Op.EQ,
    "!=": Op.NE,
    "and": Op.AND,
    "or": Op.OR,
    "neg": Op.NEG,
    "not": Op.NOT,
    "abs": Op.ABS,
    "min": Op.MIN,
    "max": Op.MAX,
    "crosses_above": Op.CROSSES_ABOVE,
    "crosses_below": Op.CROSSES_BELOW,
}


@dataclass(frozen=True)
class Batch:
    """A program compiled for sweeps: its leaves, the glue's parameters, the glue's code."""

    leaves: tuple[Node, ...]  # leaf slot -> node (a series, or a shared indicator call)
    params: tuple[str, ...]  # parameter column -> name (those the glue reads itself)
    code: RuleCode


class _Emitter:
    """Emit postfix code for rule trees, numbering leaves and parameters as met."""

    def __init__(self) -> None:
        self.ops: list[int] = []
        self.operands: list[int] = []
        self.consts: list[float] = []
        self.leaves: dict[str, int] = {}
        self.leaf_nodes: list[Node] = []
        self.params: dict[str, int] = {}
        self.size = 0
        self.depth = 0

    def put(self, op: Op, operand: int = 0) -> None:
        self.ops.append(int(op))
        self.operands.append(operand)
        if op in (Op.LEAF, Op.PARAM, Op.CONST):
            self.size += 1
            self.depth = max(self.depth, self.size)
        elif op in BINARY or op == Op.STORE:
            self.size -= 1

    def emit(self, node: Node) -> None:
        k = node.kind
        if k == "series" or shared(node):
            text = render(node)
            if text not in self.leaves:
                self.leaves[text] = len(self.leaf_nodes)
                self.leaf_nodes.append(node)
            self.put(Op.LEAF, self.leaves[text])
        elif k in ("number", "bool"):
            value = float(node.value) if k == "number" else (1.0 if node.value else 0.0)
            self.put(Op.CONST, len(self.consts))
            self.consts.append(value)
        elif k == "param":
            name = str(node.value)
            self.put(Op.PARAM, self.params.setdefault(name, len(self.params)))
        else:
            for a in node.args:
                self.emit(a)
            op = _OPERATORS[str(node.value) if k in ("arith", "compare", "call") else k]
            if (op in UNARY) != (len(node.args) == 1):
                raise ValueError(f"`{render(node)}`: {op.name} takes {len(node.args)} argument")
            self.put(op)


@functools.lru_cache(maxsize=256)
def compile_batch(program: Program) -> Batch:
    """Return ``program`` compiled for sweeps (cached per program)."""
    trees, slots = program.distinct
    e = _Emitter()
    for i, tree in enumerate(trees):
        e.emit(tree)
        e.put(Op.STORE, i)
    code = RuleCode(
        ops=np.array(e.ops, dtype=np.int64),
        operands=np.array(e.operands, dtype=np.int64),
        consts=np.array(e.consts, dtype=np.float64),
        slots=np.array([len(trees) if s < 0 else s for s in slots], dtype=np.int64),
        n_rules=len(trees),
        depth=max(1, e.depth),
    )
    return Batch(tuple(e.leaf_nodes), tuple(e.params), code)


def _column(name: str, fixed: Mapping[str, Any], combos: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Return one parameter's value in every combination as float64 (fixed where unsearched)."""
    if name in getattr(combos, "names", ()):  # grid.Combos: its columns, no dict per row
        return np.asarray(combos.column(name), dtype=np.float64)  # type: ignore[attr-defined]
    return np.array([float(c.get(name, fixed[name])) for c in combos], dtype=np.float64)


def rule_inputs(
    batch: Batch,
    ev: Evaluation,
    fixed: Mapping[str, Any],
    combos: Sequence[Mapping[str, Any]],
) -> RuleInputs | None:
    """Return the leaf series and each combination's rows, parameters and ready bar.

    None when the leaf series would pass ``MAX_LEAF_CELLS``. A binding that does not
    evaluate (a window out of range) raises the evaluator's LanguageError. The caller holds
    ``np.errstate(all="ignore")``, as the serial path does.
    """
    k, n = len(combos), ev.n
    bindings: list[tuple[np.ndarray, np.ndarray]] = []  # per leaf: first combo, inverse
    for leaf in batch.leaves:
        names = params_of(leaf)
        if not names:
            bindings.append((np.zeros(1, dtype=np.int64), np.zeros(k, dtype=np.int64)))
            continue
        keys = np.column_stack([_column(p, fixed, combos) for p in names])
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        bindings.append((first, inverse.reshape(-1)))
    total = sum(first.shape[0] for first, _ in bindings)
    if total * n > MAX_LEAF_CELLS:
        return None
    leaves = np.empty((total, n))
    leaf_ready = np.zeros(total, dtype=np.int64)
    rows = np.empty((k, len(batch.leaves)), dtype=np.int64)
    offset = 0
    for slot, (leaf, (first, inverse)) in enumerate(zip(batch.leaves, bindings, strict=True)):
        if leaf.kind == "series":
            leaves[offset] = ev.bars[str(leaf.value)]  # the bars: nothing to warm up
        else:
            run = closure(leaf)
            for j, i in enumerate(first):
                ev.ready = 0
                leaves[offset + j] = run(ev, {**fixed, **combos[int(i)]})
                leaf_ready[offset + j] = ev.ready
        rows[:, slot] = offset + inverse
        offset += first.shape[0]
    if batch.leaves:
        ready = np.minimum(leaf_ready[rows].max(axis=1), n)
    else:
        ready = np.zeros(k, dtype=np.int64)
    params = np.empty((k, len(batch.params)))
    for j, name in enumerate(batch.params):
        params[:, j] = _column(name, fixed, combos)
    return RuleInputs(
        leaves=leaves, rows=rows, params=params, ready=np.ascontiguousarray(ready, np.int64)
    )


@dataclass(frozen=True)
class ProgramSweep:
    """A program's ``StrategyDef.sweep_many``: every combination on one symbol's bars.

    Answers None (run the serial path) when the leaves would pass ``MAX_LEAF_CELLS``, or a
    binding does not evaluate: the serial path then raises its error for the first
    combination that fails, as it always has.
    """

    program: Program

    def __call__(
        self,
        bars: Bars,
        fixed: Mapping[str, Any],
        combos: Sequence[Mapping[str, Any]],
        spec: SimSpec,
        *,
        risk_free_rate: float,
        keep_returns: bool,
        n_blocks: int,
        atr: np.ndarray | None,
    ) -> SweepResult | None:
        """Return one statistics row (and block sums, returns) per combination, or None."""
        if not combos or bars.n_symbols != 1:
            return None
        batch = compile_batch(self.program)
        ev = Evaluation(symbol_series(bars, 0))
        try:
            with np.errstate(all="ignore"):
                inputs = rule_inputs(batch, ev, fixed, combos)
        except LanguageError:
            return None
        if inputs is None:
            return None
        return sweep_rules(
            bars,
            batch.code,
            inputs,
            spec,
            combos,
            risk_free_rate=risk_free_rate,
            keep_returns=keep_returns,
            n_blocks=n_blocks,
            atr=atr,
        )
