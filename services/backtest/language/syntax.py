"""The strategy language's syntax: a lark grammar, the expression tree, its normal text.

An expression is parsed by a real parser (LALR over the grammar below; nothing is ever
`eval`ed) into ``Node``s, checked against the function catalogue (``functions.py``) and
rendered back as normal text (one spacing, the fewest parentheses), which is the key
compilation is cached by. Errors are ``LanguageError``s a model can act on: the position
(line:column), what was expected, the closest valid name.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

SERIES = ("open", "high", "low", "close", "volume")
MAX_TEXT = 2000

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr | or_expr "or" and_expr -> or_
?and_expr: not_expr | and_expr "and" not_expr -> and_
?not_expr: comparison | "not" not_expr -> not_
?comparison: sum | sum COMP sum -> compare
?sum: product | sum ADDOP product -> arith
?product: unary | product MULOP unary -> arith
?unary: atom | "-" unary -> neg
?atom: NUMBER -> number
     | PARAM -> param
     | "true" -> true
     | "false" -> false
     | NAME "(" [or_expr ("," or_expr)*] ")" -> call
     | NAME -> name
     | "(" or_expr ")"
COMP: "<=" | ">=" | "==" | "!=" | "<" | ">"
ADDOP: "+" | "-"
MULOP: "*" | "/"
PARAM: /\$[A-Za-z_][A-Za-z0-9_]*/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
%ignore /[ \t\r\n]+/
"""

# A compact form for the tool description (the full one is GET /strategies/language).
COMPACT_GRAMMAR = (
    "expr := expr or expr | expr and expr | not expr | sum (< <= > >= == !=) sum | sum; "
    "sum := + - * / over numbers, $params, series (open high low close volume) and "
    "calls f(args); true, false, parentheses"
)

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

_EXPECTED = {
    "NUMBER": "a number",
    "PARAM": "a `$param`",
    "NAME": "a name",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "COMMA": "`,`",
    "COMP": "a comparison (< <= > >= == !=)",
    "ADDOP": "`+` or `-`",
    "MULOP": "`*` or `/`",
    "MINUS": "`-`",
    "NOT": "`not`",
    "AND": "`and`",
    "OR": "`or`",
    "TRUE": "`true`",
    "FALSE": "`false`",
    "$END": "the end of the rule",
}


class LanguageError(ValueError):
    """An expression that cannot be compiled: where, what went wrong, what would be right."""

    def __init__(self, message: str, *, rule: str = "", line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.line = line
        self.column = column

    def located(self, rule: str) -> LanguageError:
        """Return this error attributed to ``rule``."""
        return LanguageError(self.message, rule=rule, line=self.line, column=self.column)

    def __str__(self) -> str:
        where = f" {self.line}:{self.column}" if self.line else ""
        head = f"{self.rule}{where}: " if self.rule or where else ""
        return f"{head}{self.message}"


@dataclass(frozen=True)
class Node:
    """One node of an expression: ``kind`` is number, param, bool, series, call, neg,
    arith, compare, not, and, or; ``value`` the number, name or operator."""

    kind: str
    value: float | str | bool = ""
    args: tuple[Node, ...] = ()
    line: int = 0
    column: int = 0
    meta: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def walk(self) -> Iterable[Node]:
        """Yield this node and every node below it, depth first."""
        yield self
        for a in self.args:
            yield from a.walk()


def closest(name: str, names: Iterable[str]) -> str | None:
    """Return the valid name closest to ``name``, if any is close."""
    found = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return found[0] if found else None


def _expected(tokens: Iterable[str]) -> str:
    names = sorted({_EXPECTED.get(t, f"`{t.lower()}`") for t in tokens})
    return ", ".join(names)


def _syntax_error(text: str, e: UnexpectedInput) -> LanguageError:
    line = getattr(e, "line", 0) or 0
    column = getattr(e, "column", 0) or 0
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        return LanguageError(f"unexpected character `{char}`", line=line, column=column)
    if isinstance(e, UnexpectedEOF):
        return LanguageError(
            f"the rule ends too early; expected {_expected(e.expected)}",
            line=text.count("\n") + 1,
            column=len(text.rsplit("\n", 1)[-1]) + 1,
        )
    if isinstance(e, UnexpectedToken):
        token = e.token
        if token.type == "$END":
            return LanguageError(
                f"the rule ends too early; expected {_expected(e.expected)}",
                line=text.count("\n") + 1,
                column=len(text.rsplit("\n", 1)[-1]) + 1,
            )
        what = str(token)
        hint = ""
        if token.type == "COMP" and "COMP" not in e.expected:
            hint = " (comparisons do not chain: write `a < b and b < c`)"
        return LanguageError(
            f"unexpected `{what}`; expected {_expected(e.expected)}{hint}",
            line=token.line or line,
            column=token.column or column,
        )
    return LanguageError(str(e), line=line, column=column)


def _build(tree: Tree[Token] | Token) -> Node:
    """Return the Node of a parse tree."""
    if isinstance(tree, Token):  # pragma: no cover - the grammar wraps every token
        raise LanguageError(f"unexpected `{tree}`")
    kind = str(tree.data)
    line = getattr(tree.meta, "line", 0)
    column = getattr(tree.meta, "column", 0)
    ch = tree.children
    if kind == "number":
        return Node("number", float(str(ch[0])), line=line, column=column)
    if kind == "param":
        return Node("param", str(ch[0])[1:], line=line, column=column)
    if kind in ("true", "false"):
        return Node("bool", kind == "true", line=line, column=column)
    if kind == "name":
        return Node("series", str(ch[0]), line=line, column=column)
    if kind == "call":
        name = str(ch[0])
        args = tuple(_build(c) for c in ch[1:] if not isinstance(c, Token))
        return Node("call", name, args, line=line, column=column)
    if kind == "neg":
        return Node("neg", "-", (_build(ch[0]),), line=line, column=column)
    if kind in ("arith", "compare"):
        left, op, right = ch
        return Node(kind, str(op), (_build(left), _build(right)), line=line, column=column)
    if kind in ("not_", "and_", "or_"):
        return Node(kind[:-1], kind[:-1], tuple(_build(c) for c in ch), line=line, column=column)
    raise LanguageError(f"unknown construct {kind}", line=line, column=column)


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Node:
    """Return the expression tree of ``text`` (LanguageError on a syntax error)."""
    if len(text) > MAX_TEXT:
        raise LanguageError(f"a rule has at most {MAX_TEXT} characters", line=1, column=1)
    if not text.strip():
        raise LanguageError("the rule is empty; expected an expression", line=1, column=1)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    return _build(tree)


_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "compare": 4, "+": 5, "-": 5, "*": 6, "/": 6}


def _level(node: Node) -> int:
    if node.kind == "arith":
        return _PRECEDENCE[str(node.value)]
    if node.kind == "neg":
        return 7
    return _PRECEDENCE.get(node.kind, 8)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def render(node: Node) -> str:
    """Return the normal text of ``node``: one spacing, the fewest parentheses."""
    k = node.kind
    if k == "number":
        return _number(float(node.value))
    if k == "param":
        return f"${node.value}"
    if k == "bool":
        return "true" if node.value else "false"
    if k == "series":
        return str(node.value)
    if k == "call":
        return f"{node.value}({', '.join(render(a) for a in node.args)})"
    level = _level(node)
    if k == "neg":
        inner = node.args[0]
        text = render(inner)
        return f"-({text})" if _level(inner) < level else f"-{text}"
    if k == "not":
        inner = node.args[0]
        text = render(inner)
        return f"not ({text})" if _level(inner) < level else f"not {text}"
    left, right = node.args
    lt = render(left)
    rt = render(right)
    if _level(left) < level:
        lt = f"({lt})"
    # left-associative: a right operand of equal level keeps its parentheses (a - (b - c))
    if _level(right) <= level:
        rt = f"({rt})"
    op = node.value if k in ("arith", "compare") else k
    return f"{lt} {op} {rt}"
