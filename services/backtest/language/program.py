"""Compile strategy rules onto the engine: check, find parameters and warm-up, evaluate.

A ``Program`` is four optional rules (``entry_long``, ``exit_long``, ``entry_short``,
``exit_short``) checked against the function catalogue and the declared ``$params``. It
evaluates on one symbol's bars to boolean arrays with vectorised causal kernels (indicator
results memoised per function and arguments, so a sweep computes each window once), and
``engine.signals.rules_target_nb`` turns them into the engine's targets. Every rule is false
before the strategy's ready bar: the first bar where every indicator it reads has a value
(backtesting.py's convention of not calling ``next`` before its indicators are warm).

``compile_program`` is cached by the rules' normal text and the parameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.backtest.engine.runner import Bars
from services.backtest.engine.signals import rules_target_nb
from services.backtest.language.functions import (
    FUNCTIONS,
    REAL,
    SERIES,
    SHIFT,
    WINDOW,
    crosses_nb,
)
from services.backtest.language.syntax import (
    SERIES as SERIES_NAMES,
)
from services.backtest.language.syntax import (
    LanguageError,
    Node,
    closest,
    parse,
    render,
)

RULES = ("entry_long", "exit_long", "entry_short", "exit_short")
MAX_WINDOW = 10_000


@dataclass(frozen=True)
class ParamDecl:
    """A declared ``$param``: default and optional bounds."""

    name: str
    default: float
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ParamUse:
    """What the rules need of a parameter: an integer (a window or shift), its least value."""

    integer: bool
    least: float | None  # 1 for a window, 0 for a shift


def _scalar_const(node: Node) -> float | None:
    """Return the value of a literal number (or its negation), None otherwise."""
    if node.kind == "number":
        return float(node.value)
    if node.kind == "neg" and node.args[0].kind == "number":
        return -float(node.args[0].value)
    return None


def _is_scalar(node: Node) -> bool:
    return all(n.kind in ("number", "param", "neg", "arith") for n in node.walk())


class _Checker:
    """Type-check one rule: numbers, series and conditions in the right places."""

    def __init__(self, declared: Mapping[str, ParamDecl], uses: dict[str, ParamUse]) -> None:
        self.declared = declared
        self.uses = uses
        self.pairs: list[tuple[str, str]] = []  # (slow, fast) parameter pairs of macd

    def fail(self, node: Node, message: str) -> LanguageError:
        return LanguageError(message, line=node.line, column=node.column)

    def check(self, node: Node) -> str:
        """Return the node's type: num, series or bool."""
        k = node.kind
        if k == "number":
            return "num"
        if k == "bool":
            return "bool"
        if k == "param":
            name = str(node.value)
            if name not in self.declared:
                near = closest(name, self.declared)
                hint = f"; did you mean `${near}`?" if near else ""
                raise self.fail(
                    node,
                    f"`${name}` is used but not declared in params (add "
                    f'"{name}": {{"default": ..., "min": ..., "max": ...}}){hint}',
                )
            return "num"
        if k == "series":
            name = str(node.value)
            if name in SERIES_NAMES:
                return "series"
            if name in FUNCTIONS:
                raise self.fail(
                    node, f"`{name}` is a function: call it as {FUNCTIONS[name].signature}"
                )
            near = closest(name, (*SERIES_NAMES, *FUNCTIONS))
            hint = f"; did you mean `{near}`?" if near else ""
            raise self.fail(
                node,
                f"unknown name `{name}` (series are {', '.join(SERIES_NAMES)}; parameters "
                f"start with $){hint}",
            )
        if k == "call":
            return self.call(node)
        if k == "neg":
            t = self.check(node.args[0])
            if t == "bool":
                raise self.fail(node, "`-` needs a number or a series, not a condition")
            return t
        if k == "arith":
            types = [self.check(a) for a in node.args]
            if "bool" in types:
                raise self.fail(node, f"`{node.value}` needs numbers or series, not a condition")
            return "series" if "series" in types else "num"
        if k == "compare":
            for a in node.args:
                if self.check(a) == "bool":
                    raise self.fail(
                        a,
                        f"`{node.value}` compares numbers or series, not a condition "
                        "(join conditions with and/or)",
                    )
            return "bool"
        # not / and / or
        for a in node.args:
            t = self.check(a)
            if t != "bool":
                raise self.fail(
                    a,
                    f"`{k}` joins conditions, and `{render(a)}` is a {t}: compare it, "
                    f"e.g. `{render(a)} > 0`",
                )
        return "bool"

    def call(self, node: Node) -> str:
        name = str(node.value)
        fn = FUNCTIONS.get(name)
        if fn is None:
            if name in SERIES_NAMES:
                raise self.fail(node, f"`{name}` is a series, not a function: write `{name}`")
            near = closest(name, FUNCTIONS)
            hint = f"; did you mean `{near}`?" if near else ""
            raise self.fail(node, f"unknown function `{name}`{hint}")
        if len(node.args) != len(fn.args):
            raise self.fail(
                node,
                f"`{name}` takes {len(fn.args)} argument{'s' if len(fn.args) != 1 else ''} "
                f"({fn.signature}), got {len(node.args)}",
            )
        for (arg, kind), a in zip(fn.args, node.args, strict=True):
            t = self.check(a)
            if kind == SERIES:
                if t == "bool":
                    raise self.fail(
                        a, f"`{name}` argument {arg} is a number or a series, not a condition"
                    )
                continue
            if t != "num" or not _is_scalar(a):
                raise self.fail(a, f"`{name}` argument {arg} is a number or a $param")
            self.scalar_arg(name, arg, kind, a)
        if name in ("macd", "macd_signal"):
            fast, slow = node.args[1], node.args[2]
            fv, sv = _scalar_const(fast), _scalar_const(slow)
            if fv is not None and sv is not None and fv >= sv:
                raise self.fail(node, f"`{name}` needs fast < slow (got {fv:g} and {sv:g})")
            if fast.kind == "param" and slow.kind == "param":
                self.pairs.append((str(slow.value), str(fast.value)))
        return fn.returns

    def scalar_arg(self, fn: str, arg: str, kind: str, a: Node) -> None:
        value = _scalar_const(a)
        if kind == SHIFT and value is not None and value < 0:
            raise self.fail(a, f"`{fn}` needs {arg} >= 0 (no look into the future)")
        if kind in (WINDOW, SHIFT) and value is not None:
            least = 1.0 if kind == WINDOW else 0.0
            if not float(value).is_integer() or value < least or value > MAX_WINDOW:
                raise self.fail(
                    a,
                    f"`{fn}` needs {arg} a whole number of bars from {least} to {MAX_WINDOW}"
                    f" (got {value:g})",
                )
        if a.kind == "param" and kind in (WINDOW, SHIFT):
            name = str(a.value)
            least = 1.0 if kind == WINDOW else 0.0
            old = self.uses.get(name)
            low = least if old is None or old.least is None else max(old.least, least)
            self.uses[name] = ParamUse(True, low)
            decl = self.declared[name]
            for bound, what in ((decl.default, "default"), (decl.min, "min"), (decl.max, "max")):
                if bound is None:
                    continue
                if not float(bound).is_integer():
                    raise self.fail(
                        a,
                        f"`${name}` is {arg} of `{fn}`, a number of bars: its {what} "
                        f"({bound:g}) must be a whole number",
                    )
                if bound < least:
                    why = " (no look into the future)" if kind == SHIFT else ""
                    raise self.fail(
                        a,
                        f"`${name}` is {arg} of `{fn}`: its {what} ({bound:g}) must be "
                        f">= {least:g}{why}",
                    )
        elif a.kind == "param" and kind == REAL:
            self.uses.setdefault(str(a.value), ParamUse(False, None))


def _scalar(node: Node, values: Mapping[str, float]) -> float:
    """Return the value of a scalar node under ``values``."""
    k = node.kind
    if k == "number":
        return float(node.value)
    if k == "param":
        return float(values[str(node.value)])
    if k == "neg":
        return -_scalar(node.args[0], values)
    a = _scalar(node.args[0], values)
    b = _scalar(node.args[1], values)
    op = node.value
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else math.nan


def params_of(node: Node) -> tuple[str, ...]:
    """Return the parameters ``node``'s subtree reads, sorted."""
    return tuple(sorted({str(n.value) for n in node.walk() if n.kind == "param"}))


class Evaluation:
    """One symbol's bars and the indicator results computed on them, shared across
    parameter values: a result is kept per (the call's text, the parameters it reads)."""

    def __init__(self, bars: Mapping[str, np.ndarray]) -> None:
        self.bars = bars
        self.n = int(bars["close"].shape[0])
        self.memo: dict[tuple[Any, ...], tuple[np.ndarray, int]] = {}
        self.ready = 0  # the latest first-value bar of the indicators read so far
        self.none = np.zeros(self.n, dtype=np.bool_)


# Elementwise functions: cheap, computed each time, nothing to share or to warm up.
ELEMENTWISE = frozenset({"abs", "min", "max"})


def shared(node: Node) -> bool:
    """Return whether ``node`` is an indicator call whose result an ``Evaluation`` keeps
    (per its text and the parameters it reads): every call but the crosses and
    ``ELEMENTWISE``."""
    if node.kind != "call":
        return False
    fn = FUNCTIONS[str(node.value)]
    return fn.returns != "bool" and fn.name not in ELEMENTWISE


Closure = Callable[[Evaluation, Mapping[str, float]], Any]
_UFUNCS: dict[str, Any] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "and": np.logical_and,
    "or": np.logical_or,
}


def _const(v: Any) -> Closure:
    return lambda ev, vals: v


def closure(node: Node) -> Closure:
    """Return a function computing ``node`` on an evaluation under parameter values.

    Built once per compiled program: evaluating it per combination of a sweep costs a call
    per node, not a walk of the tree.
    """
    k = node.kind
    if k == "number":
        return _const(float(node.value))
    if k == "bool":
        return _const(bool(node.value))
    if k == "param":
        name = str(node.value)
        return lambda ev, vals: vals[name]
    if k == "series":
        series = str(node.value)
        return lambda ev, vals: ev.bars[series]
    if k == "neg":
        inner = closure(node.args[0])
        return lambda ev, vals: np.negative(inner(ev, vals))
    if k == "not":
        inner = closure(node.args[0])
        return lambda ev, vals: np.logical_not(inner(ev, vals))
    if k == "call":
        return _call_closure(node)
    op = _UFUNCS[str(node.value) if k in ("arith", "compare") else k]
    left, right = (closure(a) for a in node.args)
    return lambda ev, vals: op(left(ev, vals), right(ev, vals))


def _call_closure(node: Node) -> Closure:
    fn = FUNCTIONS[str(node.value)]
    args = [closure(a) for a in node.args]
    kinds = [kind for _, kind in fn.args]
    compute = fn.compute
    if fn.returns == "bool":  # crosses: cheap, computed each time
        a, b = args
        above = fn.name == "crosses_above"

        def cross(ev: Evaluation, vals: Mapping[str, float]) -> np.ndarray:
            x, y = a(ev, vals), b(ev, vals)
            if not isinstance(x, np.ndarray):
                x = np.full(ev.n, float(x))
            if not isinstance(y, np.ndarray):
                y = np.full(ev.n, float(y))
            return crosses_nb(x, y, above)  # type: ignore[no-any-return]

        return cross
    if fn.name in ELEMENTWISE:
        return lambda ev, vals: compute(ev.bars, tuple(f(ev, vals) for f in args))
    text = render(node)
    names = params_of(node)

    def run(ev: Evaluation, vals: Mapping[str, float]) -> np.ndarray:
        key = (text, *[vals[p] for p in names])
        hit = ev.memo.get(key)
        if hit is None:
            outer = ev.ready
            ev.ready = 0  # the ready bars of the indicators below this one, kept with it
            got = []
            for f, kind, a, (arg, _) in zip(args, kinds, node.args, fn.args, strict=True):
                v = f(ev, vals)
                if kind in (WINDOW, SHIFT):
                    least = 1 if kind == WINDOW else 0
                    if not math.isfinite(v) or round(v) < least or round(v) > MAX_WINDOW:
                        raise LanguageError(
                            f"`{fn.name}` needs {arg} from {least} to {MAX_WINDOW} bars "
                            f"(got {v:g})"
                            + (" (no look into the future)" if kind == SHIFT else ""),
                            line=a.line,
                            column=a.column,
                        )
                got.append(v)
            out = compute(ev.bars, tuple(got))
            finite = np.isfinite(out)
            first = int(np.argmax(finite)) if finite.any() else ev.n
            hit = (out, max(first, ev.ready))
            ev.memo[key] = hit
            ev.ready = outer
        if hit[1] > ev.ready:
            ev.ready = hit[1]
        return hit[0]

    return run


@dataclass(frozen=True)
class Program:
    """Checked rules and parameters, ready to evaluate."""

    rules: tuple[tuple[str, Node], ...]  # (rule name, tree), given rules only
    params: tuple[ParamDecl, ...]
    uses: tuple[tuple[str, ParamUse], ...]
    pairs: tuple[tuple[str, str], ...]  # (slow, fast): slow must be greater

    @functools.cached_property
    def distinct(self) -> tuple[tuple[Node, ...], tuple[int, ...]]:
        """Return the trees of the distinct rule texts, and each RULES slot's index among
        them (-1: not given)."""
        texts: dict[str, int] = {}
        trees: list[Node] = []
        given = dict(self.rules)
        slots = []
        for name in RULES:
            tree = given.get(name)
            if tree is None:
                slots.append(-1)
                continue
            text = render(tree)
            if text not in texts:
                texts[text] = len(trees)
                trees.append(tree)
            slots.append(texts[text])
        return tuple(trees), tuple(slots)

    @functools.cached_property
    def _closures(self) -> tuple[list[Closure], tuple[int, ...]]:
        """Return one closure per distinct rule text, and each RULES slot's (-1: none)."""
        trees, slots = self.distinct
        return [closure(tree) for tree in trees], slots

    @property
    def normal(self) -> dict[str, str]:
        """Return each given rule's normal text."""
        return {name: render(tree) for name, tree in self.rules}

    @property
    def short(self) -> bool:
        """Return whether the rules can go short."""
        return any(name == "entry_short" for name, _ in self.rules)

    @property
    def defaults(self) -> dict[str, float]:
        """Return every parameter's default."""
        return {p.name: p.default for p in self.params}

    def warmup(self, values: Mapping[str, float] | None = None) -> int:
        """Return the bars before every indicator the rules read has a value."""
        vals = {**self.defaults, **(values or {})}

        def warm(node: Node) -> int:
            if node.kind != "call":
                return max((warm(a) for a in node.args), default=0)
            fn = FUNCTIONS[str(node.value)]
            scalars: list[float] = []
            below = 0
            for (_, kind), a in zip(fn.args, node.args, strict=True):
                if kind == SERIES:
                    below = max(below, warm(a))
                    scalars.append(0.0)
                else:
                    scalars.append(_scalar(a, vals))
            return below + max(0, fn.lookback(tuple(scalars)))

        return max((warm(tree) for _, tree in self.rules), default=0)

    def decide(self, ev: Evaluation, values: Mapping[str, float]) -> np.ndarray:
        """Return the target column of the rules on ``ev``'s bars under ``values``."""
        rules, ready = self.rules_of(ev, values)
        return rules_target_nb(rules[0], rules[1], rules[2], rules[3], ready)  # type: ignore[no-any-return]

    def rules_of(self, ev: Evaluation, values: Mapping[str, float]) -> tuple[list[np.ndarray], int]:
        """Return the four rules' boolean arrays (all false where not given) and the bar
        they are ready from."""
        closures, slots = self._closures
        ev.ready = 0
        computed = [f(ev, values) for f in closures]  # callers hold np.errstate(all="ignore")
        n = ev.n
        out = []
        for i in slots:
            if i < 0:
                out.append(ev.none)
                continue
            v = computed[i]
            if isinstance(v, np.ndarray):
                out.append(v if v.dtype == np.bool_ else v.astype(np.bool_))
            else:
                out.append(np.full(n, bool(v)))
        return out, min(ev.ready, n)


def bars_of(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> dict[str, np.ndarray]:
    """Return one symbol's bars as the evaluator reads them (contiguous float64)."""
    return {
        "open": np.ascontiguousarray(open_, dtype=np.float64),
        "high": np.ascontiguousarray(high, dtype=np.float64),
        "low": np.ascontiguousarray(low, dtype=np.float64),
        "close": np.ascontiguousarray(close, dtype=np.float64),
        "volume": np.ascontiguousarray(volume, dtype=np.float64),
    }


def symbol_series(bars: Bars, j: int) -> dict[str, np.ndarray]:
    """Return symbol ``j``'s bars as the evaluator reads them (volume 0 where none)."""
    volume = bars.volume[:, j] if bars.volume is not None else np.zeros(bars.n_bars)
    return bars_of(bars.open[:, j], bars.high[:, j], bars.low[:, j], bars.close[:, j], volume)


def compile_program(rules: Sequence[tuple[str, str]], params: Sequence[ParamDecl]) -> Program:
    """Return the checked program of ``rules`` (rule name, text) over ``params``.

    LanguageError (with the rule, line and column) on anything that does not compile.
    Cached by the rules' normal text and the parameters.
    """
    trees: list[tuple[str, Node]] = []
    for name, text in rules:
        if name not in RULES:
            near = closest(name, RULES)
            raise LanguageError(
                f"unknown rule `{name}`" + (f"; did you mean `{near}`?" if near else ""),
                rule=name,
            )
        try:
            trees.append((name, parse(text)))
        except LanguageError as e:
            raise e.located(name) from None
    if not trees:
        raise LanguageError("give at least one rule (entry_long or entry_short)", rule="rules")
    if not any(n.startswith("entry") for n, _ in trees):
        raise LanguageError("no entry rule: give entry_long and/or entry_short", rule="rules")
    normal = tuple((name, render(tree)) for name, tree in trees)
    return _compile(normal, tuple(params))


@functools.lru_cache(maxsize=512)
def _compile(normal: tuple[tuple[str, str], ...], params: tuple[ParamDecl, ...]) -> Program:
    declared = {p.name: p for p in params}
    for p in params:
        if p.min is not None and p.max is not None and p.min > p.max:
            raise LanguageError(
                f"min ({p.min:g}) is above max ({p.max:g})", rule=f"params.{p.name}"
            )
        if (p.min is not None and p.default < p.min) or (p.max is not None and p.default > p.max):
            raise LanguageError(
                f"default ({p.default:g}) is outside min..max", rule=f"params.{p.name}"
            )
    uses: dict[str, ParamUse] = {}
    checker = _Checker(declared, uses)
    trees = []
    order = {r: i for i, r in enumerate(RULES)}
    for name, text in sorted(normal, key=lambda r: order[r[0]]):
        tree = parse(text)
        try:
            t = checker.check(tree)
        except LanguageError as e:
            raise e.located(name) from None
        if t != "bool":
            raise LanguageError(
                f"{name} must be a condition, and `{render(tree)}` is a {t}: compare it, "
                "e.g. `close > sma(close, 20)`",
                rule=name,
                line=tree.line,
                column=tree.column,
            )
        trees.append((name, tree))
    used = {str(n.value) for _, tr in trees for n in tr.walk() if n.kind == "param"}
    for p in params:
        if p.name not in used:
            raise LanguageError(
                f"`${p.name}` is declared but no rule uses it", rule=f"params.{p.name}"
            )
    return Program(
        rules=tuple(trees),
        params=params,
        uses=tuple(sorted(uses.items())),
        pairs=tuple(dict.fromkeys(checker.pairs)),
    )
