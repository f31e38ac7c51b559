"""The names a KQL query refers to: tables, metric names, customDimensions keys, let-bound names.

A small lexer (strings, verbatim strings, comments, identifiers, numbers and timespans, operators)
and the few rules that find where a tabular expression starts: the first identifier of each statement
(after `let x =`), and the operand of `union`, `join` and `lookup`. Enough for the workbook's queries
(tests/test_infra_workbook.py); a construct it does not know makes it refuse (KqlError), never guess.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Operators that start a tabular expression without naming a table.
TABULAR_OPERATORS = frozenset({"print", "range", "datatable", "evaluate", "externaldata"})
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*)
  | (?P<str>[hH]?@?"(?:[^"\\\n]|\\.)*"|[hH]?@?'(?:[^'\\\n]|\\.)*')
  | (?P<lit>(?:datetime|timespan|dynamic)\([^()]*\))
  | (?P<num>\d+(?:\.\d+)?(?:ms|microsecond|tick|[dhms])?\b)
  | (?P<ident>[A-Za-z_$][A-Za-z0-9_]*)
  | (?P<op>==|!=|=~|!~|<=|>=|\.\.|=>|[|()\[\]{},;.=<>+\-*/%:!])
""", re.X)


class KqlError(ValueError):
    pass


@dataclass(frozen=True)
class Tok:
    kind: str
    value: str


def tokens(query: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if m is None:
            raise KqlError(f"cannot read KQL at {pos}: {query[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind in ("ws", "comment"):
            continue
        text = m.group()
        if kind == "str":
            body = text.lstrip("hH")
            verbatim = body.startswith("@")
            body = body.lstrip("@")[1:-1]
            text = body if verbatim else re.sub(r"\\(.)", r"\1", body)
        out.append(Tok(kind, text))
    return out


@dataclass
class Names:
    tables: set[str] = field(default_factory=set)
    lets: set[str] = field(default_factory=set)
    metric_names: set[str] = field(default_factory=set)   # strings compared with the `name` column
    grc_literals: set[str] = field(default_factory=set)   # every string literal starting "grc."
    dimensions: set[str] = field(default_factory=set)     # customDimensions keys


def _statements(toks: list[Tok]) -> list[list[Tok]]:
    stmts: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.kind == "op" and t.value in "([{":
            depth += 1
        elif t.kind == "op" and t.value in ")]}":
            depth -= 1
        if t.kind == "op" and t.value == ";" and depth == 0:
            stmts.append([])
        else:
            stmts[-1].append(t)
    return [s for s in stmts if s]


def _source(toks: list[Tok], i: int, names: Names, operand: bool = True) -> None:
    """The tabular expression starting at toks[i]: a table name, or a parenthesised subquery.
    `operand`: it must be tabular (what union/join/lookup take); a statement may be scalar."""
    if i >= len(toks):
        raise KqlError("a tabular operator without an operand")
    t = toks[i]
    if t.kind == "op" and t.value == "(":
        _source(toks, i + 1, names, operand)
    elif t.kind == "ident":
        if i + 1 < len(toks) and toks[i + 1].value == "(":
            return  # a function call: a scalar expression (or datatable(...)), no table
        if t.value == "union":
            _union(toks, i + 1, names)
        elif t.value not in TABULAR_OPERATORS:
            names.tables.add(t.value)
    elif operand:
        raise KqlError(f"a tabular expression starts with {t.value!r}")


def _skip_options(toks: list[Tok], i: int) -> int:
    """Past `kind=inner`, `hint.strategy=shuffle`, `withsource=T` and the like."""
    while i + 2 < len(toks) and toks[i].kind == "ident":
        if toks[i + 1].value == "=":
            i += 3
        elif toks[i + 1].value == "." and i + 4 < len(toks) and toks[i + 3].value == "=":
            i += 5
        else:
            break
    return i


def _closing(toks: list[Tok], i: int) -> int:
    """The index of the bracket closing the one at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].kind == "op" and toks[j].value in "([{":
            depth += 1
        elif toks[j].kind == "op" and toks[j].value in ")]}":
            depth -= 1
            if depth == 0:
                return j
    raise KqlError("unbalanced brackets")


def _union(toks: list[Tok], i: int, names: Names) -> None:
    i = _skip_options(toks, i)
    while i < len(toks):
        _source(toks, i, names)
        depth, j = 0, i
        while j < len(toks):  # to the next top-level comma, or the end of the operand list
            v = toks[j].value if toks[j].kind == "op" else None
            if v in ("(", "[", "{"):
                depth += 1
            elif v in (")", "]", "}"):
                depth -= 1
                if depth < 0:
                    return
            elif depth == 0 and v in (",", "|"):
                break
            j += 1
        if j >= len(toks) or toks[j].value != ",":
            return
        i = j + 1


def names(query: str) -> Names:
    toks = tokens(query)
    found = Names()
    for stmt in _statements(toks):
        expr = stmt
        if stmt[0].kind == "ident" and stmt[0].value == "let":
            if len(stmt) < 4 or stmt[1].kind != "ident" or stmt[2].value != "=":
                raise KqlError(f"unsupported let statement: {' '.join(t.value for t in stmt[:6])}")
            found.lets.add(stmt[1].value)
            expr = stmt[3:]
            if expr[0].value == "(":
                end = _closing(expr, 0)
                if end + 1 < len(expr) and expr[end + 1].value == "{":
                    raise KqlError("let-bound functions are not supported")
        # A scalar let (`let seconds = 5m / 1s`) starts with no identifier: nothing tabular to record.
        _source(expr, 0, found, operand=False)
        for i, t in enumerate(expr):
            if t.kind == "ident" and t.value in ("join", "lookup", "union") and i and expr[i - 1].value == "|":
                j = _skip_options(expr, i + 1)
                if t.value == "union":
                    _union(expr, j, found)
                else:
                    _source(expr, j, found)
    for i, t in enumerate(toks):
        if t.kind == "str" and t.value.startswith("grc."):
            found.grc_literals.add(t.value)
        if t.kind == "ident" and t.value == "name" and i + 1 < len(toks):
            op = toks[i + 1].value
            if op in ("==", "!=", "=~", "!~") and i + 2 < len(toks) and toks[i + 2].kind == "str":
                found.metric_names.add(toks[i + 2].value)
            elif op in ("in", "!"):
                at = i + 2 if op == "in" else i + 3  # `name in (...)`, `name !in (...)`
                if at >= len(toks) or toks[at].value != "(" or (op == "!" and toks[i + 2].value != "in"):
                    raise KqlError("a comparison of `name` this reader does not know")
                j = at + 1
                while j < len(toks) and toks[j].value != ")":
                    if toks[j].kind == "str":
                        found.metric_names.add(toks[j].value)
                    j += 1
        if t.kind == "ident" and t.value == "customDimensions":
            nxt, key = (toks[i + 1], toks[i + 2]) if i + 2 < len(toks) else (None, None)
            if nxt is not None and nxt.value == "." and key.kind == "ident":
                found.dimensions.add(key.value)
            elif nxt is not None and nxt.value == "[" and key.kind == "str":
                found.dimensions.add(key.value)
            else:
                raise KqlError("customDimensions used whole or with a computed key: its keys cannot be checked")
    found.tables -= found.lets
    return found
