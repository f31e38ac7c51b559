"""What infra/ deploys, evaluated without a Bicep compiler (none can be installed here).

A reader of the Bicep that infra/ is written in: `param` (with @allowed, @minLength, @maxLength,
@minValue, @maxValue), `var`, `resource` (plain, `existing`, `if (...)`, `[for ...]`), `module`,
`output`; expressions with strings and `${}` interpolation, numbers, booleans, null, objects,
arrays, member access, indexing, calls, `! && || == != < <= > >= + - * / %` and `? :`.

It is honest by construction: evaluation is lazy (a ternary evaluates only its taken branch, as ARM's
`if()` does, and only what is asked for is evaluated), and whatever it cannot know raises BicepError
naming it: an unknown function, a resource property that exists only after deployment
(`account.properties.documentEndpoint`), a loop, a parameter without value or default, a module
that is not deployed. A caller that needs such a value passes a stand-in for it explicitly
(`stand_ins={"cosmos.outputs.endpoint": ...}`), so every substitution is written down in the test.

Not ARM: `uniqueString()` is a stand-in hash here (ARM's is another 64-bit hash); only equality of
its results means anything. `environment()` is Azure's public cloud.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


class BicepError(Exception):
    """Something the evaluator cannot (or must not) evaluate; the message says what and where."""


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tok:
    kind: str  # str | num | id | op | nl | eof
    value: Any
    pos: int


OPS = ("==", "!=", "<=", ">=", "&&", "||", "??", "{", "}", "[", "]", "(", ")", ",", ":", ".", "?", "!",
       "<", ">", "+", "-", "*", "/", "%", "=", "@")


def tokens(text: str, pos: int = 0) -> Iterator[Tok]:
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in " \t\r":
            pos += 1
        elif c == "\n":
            yield Tok("nl", None, pos)
            pos += 1
        elif text.startswith("//", pos):
            end = text.find("\n", pos)
            pos = n if end < 0 else end
        elif text.startswith("/*", pos):
            end = text.find("*/", pos + 2)
            if end < 0:
                raise BicepError(f"unterminated comment at {pos}")
            pos = end + 2
        elif text.startswith("'''", pos):
            end = text.find("'''", pos + 3)
            if end < 0:
                raise BicepError(f"unterminated ''' string at {pos}")
            body = text[pos + 3:end]
            yield Tok("str", [body[1:] if body.startswith("\n") else body], pos)  # verbatim, no ${}
            pos = end + 3
        elif c == "'":
            parts, pos = _string(text, pos)
            yield Tok("str", parts, pos)
        elif c.isdigit():
            m = re.match(r"\d+", text[pos:])
            assert m
            yield Tok("num", int(m.group()), pos)
            pos += len(m.group())
        elif c.isalpha() or c == "_":
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[pos:])
            assert m
            yield Tok("id", m.group(), pos)
            pos += len(m.group())
        else:
            op = next((o for o in OPS if text.startswith(o, pos)), None)
            if op is None:
                raise BicepError(f"unexpected character {c!r} at {pos}")
            yield Tok("op", op, pos)
            pos += len(op)
    yield Tok("eof", None, pos)


ESCAPES = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def _string(text: str, pos: int) -> tuple[list[Any], int]:
    """A '...' string from `pos`: literal parts and parsed `${...}` expressions."""
    parts: list[Any] = []
    buf: list[str] = []
    i = pos + 1
    while True:
        if i >= len(text) or text[i] == "\n":
            raise BicepError(f"unterminated string at {pos}")
        c = text[i]
        if c == "\\":
            if text[i + 1] not in ESCAPES:
                raise BicepError(f"unknown escape \\{text[i + 1]} at {i}")
            buf.append(ESCAPES[text[i + 1]])
            i += 2
        elif c == "'":
            break
        elif text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            parser = Parser(text, i + 2)
            parts.append(parser.expression())
            close = parser.next()
            if close.value != "}":
                raise BicepError(f"interpolation at {i} not closed by }}")
            i = close.pos + 1
        else:
            buf.append(c)
            i += 1
    if buf or not parts:
        parts.append("".join(buf))
    return parts, i + 1


# --------------------------------------------------------------------------------------------
# Syntax tree
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    kind: str  # lit | str | ref | member | index | call | method | unary | binary | ternary | obj | arr | for
    a: Any = None
    b: Any = None
    c: Any = None

    def walk(self) -> Iterator["Node"]:
        yield self
        for child in (self.a, self.b, self.c):
            if isinstance(child, Node):
                yield from child.walk()
            elif isinstance(child, (list, tuple)):
                for item in child:
                    for sub in (item if isinstance(item, tuple) else (item,)):
                        if isinstance(sub, Node):
                            yield from sub.walk()


BINARY = [("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%")]


class Parser:
    """Recursive descent over the token stream from `pos`; newlines end an expression except
    inside parentheses, and separate the items of objects and arrays."""

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self._toks = tokens(text, pos)
        self._ahead: list[Tok] = []
        self._parens = 0

    def _fill(self, k: int) -> None:
        while len(self._ahead) <= k:
            self._ahead.append(next(self._toks))

    def peek(self, k: int = 0) -> Tok:
        if self._parens:
            i = 0
            while True:
                self._fill(i)
                if self._ahead[i].kind != "nl":
                    if k == 0:
                        return self._ahead[i]
                    k -= 1
                i += 1
        self._fill(k)
        return self._ahead[k]

    def next(self) -> Tok:
        if self._parens:
            while self.peek(0) is not self._ahead[0]:
                self._ahead.pop(0)
        self._fill(0)
        return self._ahead.pop(0)

    def expect(self, value: str) -> Tok:
        tok = self.next()
        if tok.value != value:
            raise BicepError(f"expected {value!r} at {tok.pos}, found {tok.value!r}")
        return tok

    def skip_newlines(self) -> None:
        while self.peek().kind == "nl":
            self.next()

    def expression(self) -> Node:
        cond = self._binary(0)
        if self.peek().value == "?":
            self.next()
            yes = self.expression()
            self.expect(":")
            return Node("ternary", cond, yes, self.expression())
        return cond

    def _binary(self, level: int) -> Node:
        if level == len(BINARY):
            return self._unary()
        left = self._binary(level + 1)
        while self.peek().kind == "op" and self.peek().value in BINARY[level]:
            op = self.next().value
            left = Node("binary", op, left, self._binary(level + 1))
        return left

    def _unary(self) -> Node:
        if self.peek().value in ("!", "-") and self.peek().kind == "op":
            op = self.next().value
            return Node("unary", op, self._unary())
        return self._postfix(self._primary())

    def _postfix(self, node: Node) -> Node:
        while True:
            tok = self.peek()
            if tok.value == "." and tok.kind == "op":
                self.next()
                name = self.next()
                if name.kind != "id":
                    raise BicepError(f"member name expected at {name.pos}")
                if self.peek().value == "(":
                    node = Node("method", node, name.value, self._args())
                else:
                    node = Node("member", node, name.value)
            elif tok.value == "[" and tok.kind == "op":
                self.next()
                self._parens += 1
                index = self.expression()
                self._parens -= 1
                self.expect("]")
                node = Node("index", node, index)
            else:
                return node

    def _args(self) -> list[Node]:
        self.expect("(")
        self._parens += 1
        args: list[Node] = []
        while self.peek().value != ")":
            args.append(self.expression())
            if self.peek().value == ",":
                self.next()
        self._parens -= 1
        self.expect(")")
        return args

    def _primary(self) -> Node:
        tok = self.next()
        if tok.kind == "str":
            return Node("str", tuple(tok.value))
        if tok.kind == "num":
            return Node("lit", tok.value)
        if tok.kind == "id":
            if tok.value in ("true", "false"):
                return Node("lit", tok.value == "true")
            if tok.value == "null":
                return Node("lit", None)
            if self.peek().value == "(" and self.peek().kind == "op":
                return Node("call", tok.value, self._args())
            return Node("ref", tok.value)
        if tok.value == "(":
            self._parens += 1
            inner = self.expression()
            self._parens -= 1
            self.expect(")")
            return inner
        if tok.value == "{":
            return self._object()
        if tok.value == "[":
            return self._array()
        raise BicepError(f"unexpected {tok.value!r} at {tok.pos}")

    def _object(self) -> Node:
        saved, self._parens = self._parens, 0
        items: list[tuple[Any, Node]] = []
        while True:
            self.skip_newlines()
            tok = self.next()
            if tok.value == "}":
                break
            if tok.kind == "id":
                key: Any = tok.value
            elif tok.kind == "str":
                key = Node("str", tuple(tok.value))
            else:
                raise BicepError(f"object key expected at {tok.pos}, found {tok.value!r}")
            self.expect(":")
            items.append((key, self.expression()))
            if self.peek().value == ",":
                self.next()
        self._parens = saved
        return Node("obj", tuple(items))

    def _array(self) -> Node:
        saved, self._parens = self._parens, 0
        self.skip_newlines()
        if self.peek().kind == "id" and self.peek().value == "for":
            node = self._for()
            self._parens = saved
            return node
        items: list[Node] = []
        while True:
            self.skip_newlines()
            if self.peek().value == "]":
                self.next()
                break
            items.append(self.expression())
            if self.peek().value == ",":
                self.next()
        self._parens = saved
        return Node("arr", tuple(items))

    def _for(self) -> Node:
        self.expect("for")
        self._parens += 1
        names: list[str] = []
        if self.peek().value == "(":
            self.next()
            while self.peek().value != ")":
                tok = self.next()
                if tok.kind == "id":
                    names.append(tok.value)
            self.next()
        else:
            names.append(self.next().value)
        self.expect("in")
        iterable = self.expression()
        self.expect(":")
        condition = None
        if self.peek().value == "if":
            self.next()
            self.expect("(")
            condition = self.expression()
            self.expect(")")
        self._parens -= 1
        body = self.expression()
        self.skip_newlines()
        self.expect("]")
        return Node("for", tuple(names), (iterable, condition), body)


# --------------------------------------------------------------------------------------------
# Templates: the declarations of one file
# --------------------------------------------------------------------------------------------

@dataclass
class Param:
    name: str
    type: str
    default: Node | None
    decorators: dict[str, Any]


@dataclass
class Resource:
    symbol: str
    type: str  # without the API version
    existing: bool
    condition: Node | None
    body: Node  # obj, or `for` for a loop
    module_path: str | None = None  # modules only

    @property
    def loop(self) -> bool:
        return self.body.kind == "for"

    def prop(self, *path: str) -> Node | None:
        """The syntax tree at `path` inside the body (None when absent)."""
        node: Node | None = self.body
        for key in path:
            if node is None or node.kind != "obj":
                return None
            node = next((v for k, v in node.a if k == key), None)
        return node


DECL = re.compile(r"^(param|var|resource|module|output)\s+(\w+)\s*(.*)$")
DECORATOR = re.compile(r"^@(\w+)\((.*)\)\s*$")


@dataclass
class Template:
    path: Path
    params: dict[str, Param] = field(default_factory=dict)
    vars: dict[str, Node] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    modules: dict[str, Resource] = field(default_factory=dict)
    outputs: dict[str, Node] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(INFRA)) if self.path.is_relative_to(INFRA) else self.path.name

    def declarations(self) -> Iterator[tuple[str, Node | None, list[Node]]]:
        """(symbol, condition, expressions) of every declaration, for reference scans."""
        for sym, node in self.vars.items():
            yield sym, None, [node]
        for sym, res in {**self.resources, **self.modules}.items():
            yield sym, res.condition, [n for n in (res.condition, res.body) if n is not None]
        for sym, node in self.outputs.items():
            yield f"output {sym}", None, [node]


@lru_cache(maxsize=None)
def template(path: Path) -> Template:
    text = path.read_text()
    tpl = Template(path)
    decorators: dict[str, Any] = {}
    offset = 0
    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        stripped = line.rstrip("\n")
        if m := DECORATOR.match(stripped):
            name, arg = m.groups()
            if name in ("allowed", "minLength", "maxLength", "minValue", "maxValue"):
                decorators[name] = _constant(Parser(arg).expression(), f"{tpl.name}: @{name}")
            continue
        m = DECL.match(stripped)
        if not m:
            if stripped and not stripped.startswith((" ", "}", "]", "//", ")")):
                decorators = {}
            continue
        keyword, sym, rest = m.groups()
        body_at = start + stripped.index(rest, len(keyword) + 1 + len(sym)) if rest else start + len(stripped)
        try:
            _declare(tpl, text, keyword, sym, rest, body_at, decorators)
        except BicepError as exc:
            raise BicepError(f"{tpl.name}: {keyword} {sym}: {exc}") from None
        decorators = {}
    return tpl


def _declare(tpl: Template, text: str, keyword: str, sym: str, rest: str, at: int,
             decorators: dict[str, Any]) -> None:
    if keyword == "param":
        m = re.match(r"(\w+)(\s*=\s*)?", rest)
        if not m:
            raise BicepError("type expected")
        default = Parser(text, at + m.end()).expression() if m.group(2) else None
        tpl.params[sym] = Param(sym, m.group(1), default, decorators)
        return
    if keyword in ("var", "output"):
        m = re.match(r"(?:\w+\s*)?=\s*", rest) if keyword == "output" else re.match(r"=\s*", rest)
        if not m:
            raise BicepError("'=' expected")
        node = Parser(text, at + m.end()).expression()
        (tpl.vars if keyword == "var" else tpl.outputs)[sym] = node
        return
    m = re.match(r"'([^']+)'\s*(existing\s*)?=\s*", rest)
    if not m:
        raise BicepError("'<type>' = expected")
    parser = Parser(text, at + m.end())
    condition = None
    if parser.peek().value == "if":
        parser.next()
        parser.expect("(")
        parser._parens += 1
        condition = parser.expression()
        parser._parens -= 1
        parser.expect(")")
    body = parser.expression()
    if keyword == "module":
        tpl.modules[sym] = Resource(sym, "module", False, condition, body, module_path=m.group(1))
    else:
        tpl.resources[sym] = Resource(sym, m.group(1).split("@")[0], bool(m.group(2)), condition, body)


def _constant(node: Node, where: str) -> Any:
    """A literal (decorator arguments): no references allowed."""
    if node.kind == "lit":
        return node.a
    if node.kind == "str" and all(isinstance(p, str) for p in node.a):
        return "".join(node.a)
    if node.kind == "arr":
        return [_constant(item, where) for item in node.a]
    if node.kind == "unary" and node.a == "-":
        return -_constant(node.b, where)
    raise BicepError(f"{where}: not a constant")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deployment:
    """What ARM knows about the deployment: the deployer's tenant and subscription, the cloud."""

    tenant_id: str = "72f988bf-0000-4000-8000-00000000c0de"
    subscription_id: str = "5ab5c0de-0000-4000-8000-0000000000aa"
    # environment() of Azure's public cloud (the ARM cloud metadata of AzureCloud).
    login_endpoint: str = "https://login.microsoftonline.com/"


class Lazy:
    """A value evaluated on first use (module parameters are expressions of the parent scope)."""

    def __init__(self, thunk: Callable[[], Any]) -> None:
        self._thunk = thunk

    def get(self) -> Any:
        return self._thunk()


@dataclass(frozen=True)
class ResourceRef:
    scope: "Scope"
    symbol: str


@dataclass(frozen=True)
class ModuleRef:
    scope: "Scope"
    symbol: str


@dataclass(frozen=True)
class Outputs:
    module: ModuleRef


def unique_string(*values: str) -> str:
    """Stand-in for ARM's uniqueString: deterministic, 13 lowercase base32 characters."""
    digest = hashlib.sha256("\x1f".join(values).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


def arm_string(value: Any) -> str:
    """ARM's string(): booleans are True/False, objects and arrays compact JSON."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, (str, int)):
        return str(value)
    raise BicepError(f"string() of {type(value).__name__}")


class Scope:
    """One template with its parameter values: evaluates its vars, outputs, resource properties and
    the modules it calls (each a child Scope). `stand_ins` maps `<module>.outputs.<name>` to a value
    for outputs that exist only after deployment (endpoints, names Azure assigns)."""

    def __init__(self, tpl: Template | Path, params: dict[str, Any], *, stand_ins: dict[str, Any] | None = None,
                 deployment: Deployment = Deployment(), where: str = "") -> None:
        self.template = tpl if isinstance(tpl, Template) else template(tpl)
        self._params = dict(params)
        self.stand_ins = dict(stand_ins or {})
        self.deployment = deployment
        self.where = where or self.template.name
        unknown = set(self._params) - set(self.template.params)
        if unknown:
            raise BicepError(f"{self.where}: parameters not declared: {sorted(unknown)}")
        self._cache: dict[str, Any] = {}
        self._busy: set[str] = set()
        self._children: dict[str, Scope] = {}

    # -- declarations ----------------------------------------------------------------------------
    def _memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key in self._cache:
            return self._cache[key]
        if key in self._busy:
            raise BicepError(f"{self.where}: {key} refers to itself")
        self._busy.add(key)
        try:
            value = self._cache[key] = compute()
        finally:
            self._busy.discard(key)
        return value

    def param(self, name: str) -> Any:
        return self._memo(f"param {name}", lambda: self._param(name))

    def _param(self, name: str) -> Any:
        decl = self.template.params.get(name)
        if decl is None:
            raise BicepError(f"{self.where}: no parameter {name}")
        if name in self._params:
            value = self._params[name]
            value = value.get() if isinstance(value, Lazy) else value
        elif decl.default is not None:
            value = self.eval(decl.default)
        else:
            raise BicepError(f"{self.where}: parameter {name} has no value and no default: the deployment "
                             "stops before anything is created")
        expected = {"string": str, "int": int, "bool": bool, "array": list, "object": dict}.get(decl.type)
        if expected is None or not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise BicepError(f"{self.where}: parameter {name} ({decl.type}) got {value!r}")
        d = decl.decorators
        if "allowed" in d and value not in d["allowed"]:
            raise BicepError(f"{self.where}: parameter {name}={value!r} not in {d['allowed']}")
        if "minLength" in d and len(value) < d["minLength"]:
            raise BicepError(f"{self.where}: parameter {name} is shorter than its @minLength({d['minLength']})")
        if "maxLength" in d and len(value) > d["maxLength"]:
            raise BicepError(f"{self.where}: parameter {name} is longer than its @maxLength({d['maxLength']})")
        if "minValue" in d and value < d["minValue"]:
            raise BicepError(f"{self.where}: parameter {name}={value} below @minValue({d['minValue']})")
        if "maxValue" in d and value > d["maxValue"]:
            raise BicepError(f"{self.where}: parameter {name}={value} above @maxValue({d['maxValue']})")
        return value

    def var(self, name: str) -> Any:
        if name not in self.template.vars:
            raise BicepError(f"{self.where}: no var {name}")
        return self._memo(f"var {name}", lambda: self.eval(self.template.vars[name]))

    def output(self, name: str) -> Any:
        if name not in self.template.outputs:
            raise BicepError(f"{self.where}: no output {name}")
        return self._memo(f"output {name}", lambda: self.eval(self.template.outputs[name]))

    def deployed(self, symbol: str) -> bool:
        """Whether a resource or module is part of this deployment (its `if` holds)."""
        decl = self.template.resources.get(symbol) or self.template.modules.get(symbol)
        if decl is None:
            raise BicepError(f"{self.where}: no resource or module {symbol}")
        if decl.condition is None:
            return True
        value = self.eval(decl.condition)
        if not isinstance(value, bool):
            raise BicepError(f"{self.where}: condition of {symbol} is {value!r}, not a bool")
        return value

    def module(self, symbol: str) -> "Scope":
        """The scope of a module call, its parameters bound lazily to this scope's expressions."""
        if symbol in self._children:
            return self._children[symbol]
        decl = self.template.modules.get(symbol)
        if decl is None:
            raise BicepError(f"{self.where}: no module {symbol}")
        if decl.loop:
            raise BicepError(f"{self.where}: module {symbol} is a loop")
        params = decl.prop("params")
        if params is None or params.kind != "obj":
            raise BicepError(f"{self.where}: module {symbol} has no params object")
        bound = {key: Lazy(lambda n=node: self.eval(n)) for key, node in params.a}
        path = (self.template.path.parent / str(decl.module_path)).resolve()
        child = Scope(path, bound, deployment=self.deployment, where=f"{self.where} > {symbol}")
        self._children[symbol] = child
        return child

    def property(self, symbol: str, *path: str) -> Any:
        """A resource's (or module's) declared property, evaluated: e.g. ("properties", "keyVaultKeyUri")."""
        decl = self.template.resources.get(symbol) or self.template.modules.get(symbol)
        if decl is None:
            raise BicepError(f"{self.where}: no resource {symbol}")
        node = decl.prop(*path)
        if node is None:
            raise BicepError(f"{self.where}: {symbol} declares no {'.'.join(path)}")
        return self.eval(node)

    def identity(self, symbol: str) -> tuple[str, tuple[str, ...]]:
        """(type, names from the top resource down): what ARM identifies the resource by here."""
        decl = self.template.resources.get(symbol)
        if decl is None or decl.loop:
            raise BicepError(f"{self.where}: {symbol} is not a single resource")
        name = self.property(symbol, "name")
        if not isinstance(name, str):
            raise BicepError(f"{self.where}: name of {symbol} is {name!r}")
        parent = decl.prop("parent")
        if parent is None:
            return decl.type, tuple(name.split("/"))
        if parent.kind != "ref" or parent.a not in self.template.resources:
            raise BicepError(f"{self.where}: parent of {symbol} is not a resource of this file")
        return decl.type, self.identity(parent.a)[1] + (name,)

    def references(self, symbol: str) -> list[tuple[str, Node | None]]:
        """(declaration, its condition) of every declaration whose expressions name `symbol`."""
        return [(sym, cond) for sym, cond, nodes in self.template.declarations() if sym != symbol
                and any(n.kind == "ref" and n.a == symbol for node in nodes for n in node.walk())]

    # -- expressions -----------------------------------------------------------------------------
    def evaluate(self, text: str) -> Any:
        """An expression written in the test, evaluated in this scope."""
        return self.eval(Parser(text).expression())

    def eval(self, node: Node) -> Any:
        kind = node.kind
        if kind == "lit":
            return node.a
        if kind == "str":
            return "".join(p if isinstance(p, str) else self._interpolated(p) for p in node.a)
        if kind == "ref":
            return self._ref(node.a)
        if kind == "member":
            return self._member(self.eval(node.a), node.b, node)
        if kind == "index":
            target, index = self.eval(node.a), self.eval(node.b)
            try:
                return target[index]
            except (KeyError, IndexError, TypeError):
                raise BicepError(f"{self.where}: cannot index {target!r} with {index!r}") from None
        if kind == "call":
            return self._call(node.a, node.b)
        if kind == "method":
            raise BicepError(f"{self.where}: {node.b}() on a resource runs only in Azure")
        if kind == "unary":
            value = self.eval(node.b)
            if node.a == "!":
                return not self._bool(value)
            return -value
        if kind == "binary":
            return self._binary(node.a, node.b, node.c)
        if kind == "ternary":
            return self.eval(node.b) if self._bool(self.eval(node.a)) else self.eval(node.c)
        if kind == "obj":
            out: dict[str, Any] = {}
            for key, value in node.a:
                name = key if isinstance(key, str) else self.eval(key)
                out[name] = self.eval(value)
            return out
        if kind == "arr":
            return [self.eval(item) for item in node.a]
        if kind == "for":
            raise BicepError(f"{self.where}: loops are not evaluated")
        raise BicepError(f"{self.where}: cannot evaluate {kind}")

    def _interpolated(self, node: Node) -> str:
        value = self.eval(node)
        if isinstance(value, (dict, list)) or value is None:
            raise BicepError(f"{self.where}: interpolating {value!r}")
        return arm_string(value)

    def _bool(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise BicepError(f"{self.where}: {value!r} is not a bool")
        return value

    def _ref(self, name: str) -> Any:
        t = self.template
        if name in t.params:
            return self.param(name)
        if name in t.vars:
            return self.var(name)
        if name in t.modules:
            return ModuleRef(self, name)
        if name in t.resources:
            return ResourceRef(self, name)
        raise BicepError(f"{self.where}: unknown name {name}")

    def _member(self, target: Any, name: str, node: Node) -> Any:
        if isinstance(target, dict):
            if name not in target:
                raise BicepError(f"{self.where}: no property {name} in {sorted(target)}")
            return target[name]
        if isinstance(target, ModuleRef):
            if name != "outputs":
                raise BicepError(f"{self.where}: module {target.symbol}.{name} is not evaluated")
            return Outputs(target)
        if isinstance(target, Outputs):
            key = f"{target.module.symbol}.outputs.{name}"
            owner = target.module.scope
            if key in owner.stand_ins:
                return owner.stand_ins[key]
            if not owner.deployed(target.module.symbol):
                raise BicepError(f"{owner.where}: {key} of a module that is not deployed")
            return owner.module(target.module.symbol).output(name)
        if isinstance(target, ResourceRef):
            scope = target.scope
            if not scope.deployed(target.symbol):
                raise BicepError(f"{scope.where}: {target.symbol}.{name} of a resource that is not deployed")
            if name == "name":
                return scope.property(target.symbol, "name")
            raise BicepError(f"{scope.where}: {target.symbol}.{name} is known only after deployment; "
                             "give the output that carries it a stand-in")
        raise BicepError(f"{self.where}: .{name} of {target!r}")

    def _binary(self, op: str, left: Node, right: Node) -> Any:
        if op == "&&":
            return self._bool(self.eval(left)) and self._bool(self.eval(right))
        if op == "||":
            return self._bool(self.eval(left)) or self._bool(self.eval(right))
        a, b = self.eval(left), self.eval(right)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
            raise BicepError(f"{self.where}: {a!r} {op} {b!r}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "+": a + b, "-": a - b, "*": a * b,
                "/": a // b if b else None, "%": a % b if b else None}[op]

    def _load_text(self, rel: str) -> str:
        path = (self.template.path.parent / rel).resolve()
        if not path.is_file():
            raise BicepError(f"{self.where}: loadTextContent('{rel}'): no such file")
        return path.read_text(encoding="utf-8")

    def _call(self, name: str, arg_nodes: list[Node]) -> Any:
        d = self.deployment
        if name == "environment":
            return {"name": "AzureCloud", "authentication": {"loginEndpoint": d.login_endpoint}}
        if name == "tenant":
            return {"tenantId": d.tenant_id}
        if name == "subscription":
            return {"id": f"/subscriptions/{d.subscription_id}", "subscriptionId": d.subscription_id,
                    "tenantId": d.tenant_id}
        args = [self.eval(a) for a in arg_nodes]
        fns: dict[str, Callable[..., Any]] = {
            "string": arm_string,
            "empty": lambda v: len(v) == 0 if v is not None else True,
            "endsWith": lambda s, x: s.lower().endswith(x.lower()),
            "startsWith": lambda s, x: s.lower().startswith(x.lower()),
            "toLower": str.lower,
            "toUpper": str.upper,
            "take": lambda v, n: v[:max(n, 0)],
            "length": len,
            "contains": lambda v, x: x in v,
            "concat": lambda *vs: "".join(vs) if all(isinstance(v, str) for v in vs) else sum(vs, []),
            "replace": lambda s, old, new: s.replace(old, new),
            "split": lambda s, sep: s.split(sep),
            "uniqueString": lambda *vs: unique_string(*vs),
            "items": lambda o: [{"key": k, "value": o[k]} for k in sorted(o, key=str.lower)],
            "union": lambda *os: {k: v for o in os for k, v in o.items()},
            "max": max,
            "min": min,
            # Read at compile time from a path relative to the template, as Bicep does.
            "loadTextContent": lambda rel, *_: self._load_text(rel),
        }
        fn = fns.get(name)
        if fn is None:
            raise BicepError(f"{self.where}: function {name}() is not evaluated here")
        try:
            return fn(*args)
        except (TypeError, AttributeError) as exc:
            raise BicepError(f"{self.where}: {name}({', '.join(map(repr, args))}): {exc}") from None


# --------------------------------------------------------------------------------------------
# Parameter files as azd and `az deployment` read them
# --------------------------------------------------------------------------------------------

AZD_VAR = re.compile(r"^\$\{(\w+)(?:=(.*))?\}$")


def parameter_file(path: Path, azd_env: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameter values a deployment with `path` passes. With `azd_env` (azd's environment),
    `${VAR}` / `${VAR=default}` are substituted as azd does and converted to the parameter's type;
    a `${VAR}` without default whose VAR is unset is what azd asks for: BicepError names it.
    `extra` are `--parameters name=value` given on the command line."""
    main = template(INFRA / "main.bicep")
    values: dict[str, Any] = {}
    for name, entry in json.loads(path.read_text())["parameters"].items():
        value = entry["value"]
        if isinstance(value, str) and (m := AZD_VAR.match(value)):
            if azd_env is None:
                raise BicepError(f"{path.name}: {name} needs azd to substitute {value}")
            var, default = m.group(1), m.group(2)
            if azd_env.get(var):
                value = azd_env[var]
            elif default is not None:
                value = default
            else:
                raise BicepError(f"{path.name}: parameter {name} comes from {var}, which is not set: azd asks "
                                 f"for it (and fails with --no-prompt)")
            decl = main.params.get(name)
            if decl is not None and decl.type == "bool":
                if value not in ("true", "false"):
                    raise BicepError(f"{path.name}: {name}={value!r} is not a bool")
                value = value == "true"
            elif decl is not None and decl.type == "int":
                value = int(value)
        values[name] = value
    values.update(extra or {})
    return values
