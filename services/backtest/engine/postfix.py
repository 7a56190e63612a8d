"""A postfix program over bar series: the glue of a strategy's rules, run once per trial.

A sweep of a strategy written in the language computes every indicator ("leaf series") once
per distinct binding of the parameters it reads, stacked in a (rows, n) matrix; what is left
of the rules (arithmetic, comparisons, ``and``/``or``/``not``, ``abs``/``min``/``max`` and
the crosses) is a postfix program of ``Op`` codes that each trial runs over whole series, its
leaves found through its own row table, its ``$params`` from its own row of values. The
results are the four boolean rules ``signals.rules_target_into_nb`` turns into targets.

Values follow numpy's elementwise semantics the serial evaluator (``language.program``)
uses, so each trial's rules are identical to it: IEEE arithmetic (``x / 0`` is inf or NaN),
comparisons false on NaN, ``min``/``max`` NaN when either side is (``np.minimum``), a
condition held as 1.0 or 0.0. A stack entry is a scalar, a leaf row, or a series in the
entry's scratch row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from shared.quant.kernels import Float64Array, njit

Int64Array = npt.NDArray[np.int64]


class Op(IntEnum):
    """One instruction. Pushes take an operand (leaf slot, param column, constant index);
    ``STORE`` pops a condition into rule row ``operand``; the others pop their arguments and
    push the result."""

    LEAF = 0
    PARAM = 1
    CONST = 2
    STORE = 3
    NEG = 4
    NOT = 5
    ABS = 6
    ADD = 7
    SUB = 8
    MUL = 9
    DIV = 10
    LT = 11
    LE = 12
    GT = 13
    GE = 14
    EQ = 15
    NE = 16
    AND = 17
    OR = 18
    MIN = 19
    MAX = 20
    CROSSES_ABOVE = 21
    CROSSES_BELOW = 22


UNARY = frozenset({Op.NEG, Op.NOT, Op.ABS})
BINARY = frozenset(Op) - UNARY - {Op.LEAF, Op.PARAM, Op.CONST, Op.STORE}

# Numba reads these module constants at compile time (an IntEnum member compares as an int).
_LEAF, _PARAM, _CONST, _STORE = int(Op.LEAF), int(Op.PARAM), int(Op.CONST), int(Op.STORE)
_NEG, _NOT, _ABS = int(Op.NEG), int(Op.NOT), int(Op.ABS)
_ADD, _SUB, _MUL, _DIV = int(Op.ADD), int(Op.SUB), int(Op.MUL), int(Op.DIV)
_LT, _LE, _GT, _GE, _EQ, _NE = (int(o) for o in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE))
_AND, _OR, _MIN, _MAX = int(Op.AND), int(Op.OR), int(Op.MIN), int(Op.MAX)
_ABOVE, _BELOW = int(Op.CROSSES_ABOVE), int(Op.CROSSES_BELOW)

# What a stack entry holds.
_SCALAR, _ROW, _SCRATCH = 0, 1, 2


@dataclass(frozen=True)
class RuleCode:
    """The glue of a strategy's rules as a postfix program.

    ``slots`` gives, for entry_long, exit_long, entry_short and exit_short, the rule row
    their ``STORE`` writes (``n_rules`` where the rule is not given: a row left false).
    """

    ops: Int64Array  # Op codes
    operands: Int64Array  # one per op (0 where unused)
    consts: Float64Array
    slots: Int64Array  # (4,)
    n_rules: int
    depth: int  # the most entries on the stack


@dataclass(frozen=True)
class RuleInputs:
    """What the trials of a sweep read: leaf series, and per trial its rows, params, ready."""

    leaves: Float64Array  # (rows, n)
    rows: Int64Array  # (k, leaf slots) row of each leaf slot
    params: Float64Array  # (k, param columns)
    ready: Int64Array  # (k,) the bar each trial's rules hold from


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _apply_nb(op: int, a: float, b: float) -> float:
    """Return ``a op b`` for a binary elementwise op (conditions as 1.0 / 0.0)."""
    if op == _ADD:
        return a + b
    if op == _SUB:
        return a - b
    if op == _MUL:
        return a * b
    if op == _DIV:
        return a / b
    if op == _LT:
        return 1.0 if a < b else 0.0
    if op == _LE:
        return 1.0 if a <= b else 0.0
    if op == _GT:
        return 1.0 if a > b else 0.0
    if op == _GE:
        return 1.0 if a >= b else 0.0
    if op == _EQ:
        return 1.0 if a == b else 0.0
    if op == _NE:
        return 1.0 if a != b else 0.0
    if op == _AND:
        return 1.0 if (a != 0.0 and b != 0.0) else 0.0
    if op == _OR:
        return 1.0 if (a != 0.0 or b != 0.0) else 0.0
    if op == _MIN:  # np.minimum: NaN if either is
        return a if (a < b or a != a) else b
    # _MAX
    return a if (a > b or a != a) else b


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _unary_nb(op: int, a: float) -> float:
    """Return ``op a`` for a unary op."""
    if op == _NEG:
        return -a
    if op == _NOT:
        return 0.0 if a != 0.0 else 1.0
    return abs(a)


@njit(cache=True, nogil=True, error_model="numpy")
def run_rules_nb(
    ops: Int64Array,
    operands: Int64Array,
    consts: Float64Array,
    params: Float64Array,
    rows: Int64Array,
    leaves: Float64Array,
    scratch: Float64Array,
    kinds: Int64Array,
    refs: Int64Array,
    values: Float64Array,
    rules: np.ndarray,
) -> None:
    """Run the postfix program of one trial, writing each ``STORE``'s rule row of ``rules``.

    ``params`` and ``rows`` are the trial's parameter values and leaf rows; ``scratch``
    (depth, n), ``kinds``, ``refs`` and ``values`` (depth,) are the stack, reused across
    trials; ``rules`` (n_rules + 1, n) booleans.
    """
    n = scratch.shape[1]
    sp = 0
    for pc in range(ops.shape[0]):
        op = ops[pc]
        arg = operands[pc]
        if op == _LEAF:
            kinds[sp] = _ROW
            refs[sp] = rows[arg]
            sp += 1
        elif op in (_PARAM, _CONST):
            kinds[sp] = _SCALAR
            values[sp] = params[arg] if op == _PARAM else consts[arg]
            sp += 1
        elif op == _STORE:
            sp -= 1
            out = rules[arg]
            if kinds[sp] == _SCALAR:
                out[:] = values[sp] != 0.0
            else:
                x = leaves[refs[sp]] if kinds[sp] == _ROW else scratch[sp]
                for t in range(n):
                    out[t] = x[t] != 0.0
        elif op in (_NEG, _NOT, _ABS):
            s = sp - 1
            if kinds[s] == _SCALAR:
                values[s] = _unary_nb(op, values[s])
            else:
                x = leaves[refs[s]] if kinds[s] == _ROW else scratch[s]
                out = scratch[s]
                for t in range(n):
                    out[t] = _unary_nb(op, x[t])
                kinds[s] = _SCRATCH
        else:
            sp -= 1
            s = sp - 1  # the result replaces the left argument
            ka = kinds[s]
            kb = kinds[sp]
            va = values[s]
            vb = values[sp]
            xa = leaves[refs[s]] if ka == _ROW else scratch[s]
            xb = leaves[refs[sp]] if kb == _ROW else scratch[sp]
            if op in (_ABOVE, _BELOW):
                if ka == _SCALAR and kb == _SCALAR:  # two constants never cross
                    values[s] = 0.0
                    continue
                out = scratch[s]
                # Backwards: bar t reads bars t - 1 and t, and ``out`` may be ``xa``.
                for t in range(n - 1, 0, -1):
                    a0 = va if ka == _SCALAR else xa[t - 1]
                    a1 = va if ka == _SCALAR else xa[t]
                    b0 = vb if kb == _SCALAR else xb[t - 1]
                    b1 = vb if kb == _SCALAR else xb[t]
                    if op == _ABOVE:
                        out[t] = 1.0 if (a0 < b0 and a1 > b1) else 0.0
                    else:
                        out[t] = 1.0 if (b0 < a0 and b1 > a1) else 0.0
                if n > 0:
                    out[0] = 0.0
                kinds[s] = _SCRATCH
            elif ka == _SCALAR and kb == _SCALAR:
                values[s] = _apply_nb(op, va, vb)
            else:
                out = scratch[s]
                for t in range(n):
                    a = va if ka == _SCALAR else xa[t]
                    b = vb if kb == _SCALAR else xb[t]
                    out[t] = _apply_nb(op, a, b)
                kinds[s] = _SCRATCH
