"""What a string expression is built from, for the rules about SQL built from strings.

:class:`StringFlow` tells whether a string expression is a constant, or built by f-string,
``%``, ``.format()``, ``+`` or ``str.join()`` from values that are not, and which values
those are. It follows names through :class:`~sqla_doctor.static.dataflow.DataFlow`;
anything it cannot see into (a call, a parameter, an attribute) is *opaque*, never
guessed.
"""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from sqla_doctor.static.dataflow import (
    MAX_DEPTH,
    NESTED_SCOPES,
    Binding,
    BindingKind,
    DataFlow,
    contains_node,
    last_name,
    node_position,
    string_annotation,
)
from sqla_doctor.static.index.extract import CallShape, is_constant_name
from sqla_doctor.static.index.functions import (
    escapes_identifier_quotes,
    instance_receiver,
)
from sqla_doctor.static.index.models import class_literals
from sqla_doctor.static.syntax import call_keyword

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext


def _named_params(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs]


def _rebinds_or_leaves(body: list[ast.stmt], name: str) -> bool:
    """Whether every run of ``body`` binds ``name`` again or leaves the block."""
    for stmt in body:
        if isinstance(stmt, (ast.Raise, ast.Return, ast.Continue, ast.Break)):
            return True
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in stmt.targets
        ):
            return True
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == name
            and stmt.value is not None
        ):
            return True
    return False


def _alembic_revision(tree: ast.Module) -> bool:
    """Whether the module is an Alembic revision: it assigns ``revision`` and
    ``down_revision`` at the top level."""
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            names.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
    return {"revision", "down_revision"} <= names


def _exported(tree: ast.Module) -> frozenset[str]:
    """The names a module's ``__all__`` lists; every name if it is not a literal list."""
    names: set[str] = set()
    for stmt in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
            targets, value = [stmt.target], stmt.value
        if not any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            continue
        if not isinstance(value, (ast.List, ast.Tuple)):
            return _EVERY_NAME
        for element in value.elts:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                names.add(element.value)
            else:
                return _EVERY_NAME
    return frozenset(names)


class _EveryName(frozenset[str]):
    def __contains__(self, item: object) -> bool:
        return True


_EVERY_NAME = _EveryName()


def name_uses(tree: ast.Module) -> dict[str, tuple[int, list[ast.Call]]]:
    """For each function defined at module level: how often its name is used in the
    module, and the calls made through that name."""
    wanted = {
        stmt.name for stmt in tree.body if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    uses: dict[str, int] = {}
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in wanted:
            uses[node.id] = uses.get(node.id, 0) + 1
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in wanted:
                calls.setdefault(func.id, []).append(node)
    return {name: (count, calls.get(name, [])) for name, count in uses.items()}


def call_arguments(
    call: ast.Call, function: ast.FunctionDef | ast.AsyncFunctionDef, bound: int = 0
) -> dict[str, ast.expr | None]:
    """What each named parameter of ``function`` receives at ``call``: the argument,
    the default when none is passed, None when unknowable (``*args``, ``**kwargs``);
    ``bound`` leading parameters are not passed (a method's ``self``)."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults.extend(args.defaults)
    positional, defaults = positional[bound:], defaults[bound:]
    received: dict[str, ast.expr | None] = {}
    starred = any(isinstance(a, ast.Starred) for a in call.args)
    spread = any(k.arg is None for k in call.keywords)
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    for position, (param, default) in enumerate(zip(positional, defaults, strict=True)):
        if starred or spread:
            received[param.arg] = None
        elif position < len(call.args):
            received[param.arg] = call.args[position]
        else:
            received[param.arg] = keywords.get(param.arg, default)
    for param, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        received[param.arg] = None if spread else keywords.get(param.arg, default)
    return received


def _returned(function: ast.FunctionDef) -> tuple[ast.expr, ...]:
    """The values ``function`` returns; () when it yields or may end without a value."""
    found: list[ast.expr] = []
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return ()
        if isinstance(node, ast.Return):
            if node.value is None:
                return ()
            found.append(node.value)
        if isinstance(node, (*NESTED_SCOPES, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    if not _ends(function.body):
        # Falling off the end returns None, not text.
        return ()
    return tuple(found)


def _ends(body: list[ast.stmt]) -> bool:
    """Whether ``body`` never falls off its end: it ends in a return or a raise, or in an
    ``if`` whose branches both do (``if exists: return url`` / ``else: raise``)."""
    last = body[-1] if body else None
    if isinstance(last, ast.If):
        return _ends(last.body) and _ends(last.orelse)
    return isinstance(last, (ast.Return, ast.Raise))


# Strings ------------------------------------------------------------------------------
class ValueState(enum.Enum):
    """What is known of a value's text."""

    STATIC = "static"  # fixed by the source: literals, constants, numbers
    DYNAMIC = "dynamic"  # a string built from at least one value that is not static
    OPAQUE = "opaque"  # not knowable here: a parameter, a call, an attribute


@dataclass(frozen=True)
class Interpolation:
    """A non-static value spliced into a string, how, and where the splicing happens.

    ``placeholder``: the value names a bind parameter (``f":{name}"``), so it is SQL only
    if the statement is executed without its parameters being bound.
    ``identifier``: the value stands where SQL wants a table or column name
    (``f"SELECT * FROM {table}"``), which no bound parameter can replace.
    """

    value: ast.expr
    how: str
    at: ast.AST
    placeholder: bool = False
    identifier: bool = False


@dataclass(frozen=True)
class StringValue:
    state: ValueState
    is_str: bool = False
    interpolations: tuple[Interpolation, ...] = ()

    @property
    def dynamic(self) -> bool:
        return self.state is ValueState.DYNAMIC


_STATIC = StringValue(ValueState.STATIC, is_str=False)
_STATIC_STR = StringValue(ValueState.STATIC, is_str=True)
_OPAQUE = StringValue(ValueState.OPAQUE)
_ENUM_BASES = frozenset(
    {"enum.Enum", "enum.StrEnum", "enum.IntEnum", "enum.Flag", "enum.IntFlag", "enum.ReprEnum"}
)
_NUMERIC_BUILTINS = frozenset({"int", "float", "len", "bool", "abs", "round", "ord", "hash"})
_STR_PRESERVING = frozenset(
    {
        "strip", "lstrip", "rstrip", "upper", "lower", "title", "casefold", "capitalize",
        "swapcase", "ljust", "rjust", "center", "zfill", "expandtabs", "removeprefix",
        "removesuffix",
    }
)
# Identifier quoting (`dialect.identifier_preparer.quote(name)`, psycopg's
# `quote_ident`): the text that comes out is escaped for SQL, whatever went in.
_QUOTING = frozenset(
    {"quote", "quote_identifier", "quote_schema", "format_table", "format_column", "quote_ident"}
)
# `[^a-zA-Z0-9_]`, `[^\w]+`: a negated class of word characters only, so what it removes
# is everything else.
_REMOVES_NON_WORD = re.compile(r"\[\^(?:a-z|A-Z|0-9|_|\\w|\\d)+\][+*]?")
_UUID_FACTORIES = frozenset({"uuid.uuid1", "uuid.uuid3", "uuid.uuid4", "uuid.uuid5"})
_NUMERIC_SPEC = re.compile(r"^[^a-zA-Z]*[bcdeEfFgGnoxX%]$")
HOW_FSTRING = "an f-string"
HOW_PERCENT = "`%` formatting"
HOW_FORMAT = "`.format()`"
HOW_CONCAT = "concatenation"
HOW_JOIN = "`str.join()`"
HOW_REPLACE = "`.replace()`"


def _stand_in_call(name: str, shape: CallShape) -> ast.Call:
    """A call of ``name`` with arguments of the kinds ``shape`` records (call_shape)."""
    positional, keywords = shape
    call = ast.Call(
        func=ast.Name(id=name, ctx=ast.Load()),
        args=[_stand_in(kind) for kind in positional],
        keywords=[
            ast.keyword(arg=None if arg == "*" else arg, value=_stand_in(kind))
            for arg, kind in keywords
        ],
    )
    return ast.fix_missing_locations(call)


def _stand_in(kind: str) -> ast.expr:
    unknown = ast.Name(id="<argument>", ctx=ast.Load())
    if kind == "*":
        return ast.Starred(value=unknown, ctx=ast.Load())
    if kind == "text" or kind.startswith("text="):
        return ast.Constant(value="text")
    if kind == "texts":
        return ast.Tuple(elts=[ast.Constant(value="text")], ctx=ast.Load())
    return unknown


@dataclass(frozen=True)
class _Assumption:
    """The parameters of ``function`` whose argument, at one call, is fixed text
    (``values``) or an iterable of fixed text (``elements``)."""

    function: ast.FunctionDef
    values: frozenset[str]
    elements: frozenset[str]


# (id of the function, parameters with fixed values, parameters with fixed elements).
_CallKey = tuple[int, frozenset[str], frozenset[str]]
# What a helper returns at such a call: its value, and whether its elements are fixed.
_Summary = tuple["StringValue", bool]
# A bind parameter's name in SQL text (`:key_`), not a PostgreSQL cast (`::int`).
_PLACEHOLDER = re.compile(r"(?<![:\w]):[A-Za-z_]")
# What a parameter must be at every call: fixed text, an iterable of it, a dict of it.
_Part = Literal["value", "elements", "values"]
# How many helpers deep a call's result is followed (a helper calling a helper ...).
_MAX_CALL_DEPTH = 3


class StringFlow:
    """How a string expression is built, following names through :class:`DataFlow`.

    ``value(expr)`` is STATIC for text fixed by the source (literals, literal-only
    concatenation, f-strings of constants, UPPER_CASE constants, numbers, lookups in a
    literal dict), DYNAMIC when some non-static value is spliced in by an f-string, ``%``,
    ``.format()``, ``+``, ``str.join()`` or ``.replace()`` (``interpolations`` lists them),
    and OPAQUE when nothing is known (a parameter or a call passed as is).
    """

    def __init__(
        self,
        flow: DataFlow,
        *,
        assume: _Assumption | None = None,
        calls: dict[_CallKey, _Summary | None] | None = None,
        depth: int = 0,
        root: StringFlow | None = None,
    ) -> None:
        self.flow = flow
        self._active: set[int] = set()
        self._cache: dict[int, StringValue] = {}
        self._cuts = 0
        self._class_constants: dict[tuple[int, str], bool] = {}
        # `self.url`'s prefixes per (class, attribute); None while being computed.
        self._attribute_urls: dict[tuple[int, str], list[StringPrefix] | None] = {}
        self._stored: frozenset[str] | None = None
        # Inside a helper's summary: what its parameters hold at the call being followed.
        self._assume = assume
        # Helpers' summaries, shared by the flows that follow calls from this one (None:
        # being computed, a recursive call).
        self._calls: dict[_CallKey, _Summary | None] = {} if calls is None else calls
        self._depth = depth
        # Parameters fixed by every call of their function (None: being computed).
        self._params: dict[tuple[int, str, _Part], bool | None] = {}
        self._param_depth = 0
        self._root: StringFlow = self if root is None else root
        self._call_sites: dict[str, tuple[int, list[ast.Call]]] | None = None
        # Stand-ins for other modules' calls of a helper, by the helper (kept: values are
        # cached by node identity).
        self._outside: dict[int, list[ast.Call]] = {}

    def value(self, expr: ast.expr) -> StringValue:
        cached = self._cache.get(id(expr))
        if cached is not None:
            return cached
        return self._guarded(expr, self._value)

    def _guarded(
        self, node: ast.AST | Binding, compute: Callable[[Any], StringValue]
    ) -> StringValue:
        key = id(node)
        if key in self._active or len(self._active) > MAX_DEPTH:
            # A cycle (loop-carried `sql += ...`) adds nothing new to what reaches.
            self._cuts += 1
            return _STATIC
        cuts = self._cuts
        self._active.add(key)
        try:
            result = compute(node)
        finally:
            self._active.discard(key)
        if self._cuts == cuts and not isinstance(node, Binding):
            # Only what was computed whole is reusable; a cut value may miss a part.
            self._cache[key] = result
        return result

    # Building blocks ---------------------------------------------------------------
    @staticmethod
    def build(
        parts: Iterable[tuple[ast.expr, StringValue]], how: str, at: ast.AST
    ) -> StringValue:
        """A string made of ``parts``: opaque parts become interpolations made ``how``."""
        found: list[Interpolation] = []
        for node, part in parts:
            if part.state is ValueState.DYNAMIC:
                found.extend(part.interpolations)
            elif part.state is ValueState.OPAQUE:
                found.append(Interpolation(node, how, at))
        if found:
            return StringValue(ValueState.DYNAMIC, True, tuple(found))
        return _STATIC_STR

    @staticmethod
    def either(values: Sequence[StringValue]) -> StringValue:
        """One of several values (branches, bindings): dynamic if any is, static if all are."""
        if not values:
            return _OPAQUE
        dynamic = [v for v in values if v.state is ValueState.DYNAMIC]
        if dynamic:
            found = tuple(i for v in dynamic for i in v.interpolations)
            return StringValue(ValueState.DYNAMIC, True, found)
        if all(v.state is ValueState.STATIC for v in values):
            return StringValue(ValueState.STATIC, all(v.is_str for v in values))
        return StringValue(ValueState.OPAQUE, any(v.is_str for v in values))

    def binop(
        self, op: ast.operator, left: ast.expr, right: ast.expr, at: ast.AST,
        left_value: StringValue | None = None,
    ) -> StringValue:
        lv = left_value if left_value is not None else self.value(left)
        if isinstance(op, ast.Add):
            rv = self.value(right)
            if _ends_with_bind_marker(left):
                rv = _as_placeholder(right, rv, HOW_CONCAT, at)
            elif _before_identifier(left):
                rv = _as_identifier(right, rv, HOW_CONCAT, at)
            if lv.is_str or rv.is_str:
                return self.build([(left, lv), (right, rv)], HOW_CONCAT, at)
        elif isinstance(op, ast.Mod) and lv.is_str:
            # `query % holders` where `holders = {...}` (or a tuple) and nothing fills it
            # later: the literal's own values are what is spliced in.
            literal = self._unchanged_literal(right)
            if isinstance(literal, (ast.Dict, ast.Tuple)):
                right = literal
            operands: list[ast.expr]
            if isinstance(right, ast.Tuple):
                operands = list(right.elts)
            elif isinstance(right, ast.Dict):
                operands = list(right.values)
            else:
                operands = [right]
            numeric = _percent_operands(left, right, operands, _numeric_placeholder)
            names = _percent_operands(left, right, operands, _name_placeholder)
            parts = [(left, lv)]
            for operand in operands:
                if id(operand) in numeric:
                    continue
                value = self.value(operand)
                if id(operand) in names:
                    value = _as_identifier(operand, value, HOW_PERCENT, at)
                parts.append((operand, value))
            return self.build(parts, HOW_PERCENT, at)
        elif isinstance(op, ast.Mult):
            rv = self.value(right)
            # "?, " * n repeats fixed text: the count cannot inject anything.
            if lv.is_str:
                return lv
            if rv.is_str:
                return rv
            return self.either([lv, rv])
        rv = self.value(right)
        if lv.state is ValueState.STATIC and rv.state is ValueState.STATIC:
            return _STATIC
        return _OPAQUE

    # Expressions -------------------------------------------------------------------
    def _value(self, expr: ast.expr) -> StringValue:
        if isinstance(expr, ast.Constant):
            return _STATIC_STR if isinstance(expr.value, str) else _STATIC
        if isinstance(expr, ast.JoinedStr):
            parts: list[tuple[ast.expr, StringValue]] = []
            previous: ast.expr | None = None
            written = ""  # the literal text before the piece
            for number, piece in enumerate(expr.values):
                if isinstance(piece, ast.FormattedValue):
                    spec = piece.format_spec
                    if isinstance(spec, ast.JoinedStr) and _numeric_format(spec):
                        continue
                    part = self.value(piece.value)
                    if _ends_with_bind_marker(previous, previous is expr.values[0]):
                        part = _as_placeholder(piece.value, part, HOW_FSTRING, expr)
                    elif not in_sql_string(written) and (
                        _before_identifier(previous)
                        or _after_identifier(
                            expr.values[number + 1] if number + 1 < len(expr.values) else None
                        )
                    ):
                        part = _as_identifier(piece.value, part, HOW_FSTRING, expr)
                    parts.append((piece.value, part))
                elif isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    written += piece.value
                previous = piece
            return self.build(parts, HOW_FSTRING, expr)
        if isinstance(expr, ast.BinOp):
            return self.binop(expr.op, expr.left, expr.right, expr)
        if isinstance(expr, ast.Call):
            return self._call(expr)
        if isinstance(expr, ast.Name):
            return self._name(expr)
        if isinstance(expr, ast.Attribute):
            if (
                _constant_attribute(expr)
                or self.schema_identifier(expr)
                or self.enum_member(expr)
                or self.class_constant(expr)
                or self._enum_variable(expr)
                or (expr.attr in ("hex", "int") and self._new_uuid(expr.value))
                or (expr.attr == "string" and self._compiled(expr.value))
                or (expr.attr == "key" and self._zone_info(expr.value))
            ):
                return _STATIC_STR
            return _OPAQUE
        if isinstance(expr, ast.Subscript):
            return self._subscript(expr)
        if isinstance(expr, ast.IfExp):
            return self.either([self.value(expr.body), self.value(expr.orelse)])
        if isinstance(expr, ast.BoolOp):
            return self.either([self.value(v) for v in expr.values])
        if isinstance(expr, ast.NamedExpr):
            return self.value(expr.value)
        if isinstance(expr, (ast.Compare, ast.UnaryOp)) and all(
            self.value(sub).state is ValueState.STATIC
            for sub in ast.iter_child_nodes(expr)
            if isinstance(sub, ast.expr)
        ):
            return _STATIC
        return _OPAQUE

    def _compiled(self, expr: ast.expr, depth: int = 0) -> bool:
        """A statement SQLAlchemy compiled (``stmt.compile(...)``, a helper named
        ``compile_query()``, a name bound once to one): its text is SQL the compiler wrote,
        values as placeholders or, with ``literal_binds``, rendered and escaped."""
        if isinstance(expr, ast.Name) and depth < 4:
            bindings = self.flow.bindings(expr)
            return (
                len(bindings) == 1
                and bindings[0].kind is BindingKind.ASSIGN
                and not bindings[0].path
                and bindings[0].value is not None
                and self._compiled(bindings[0].value, depth + 1)
            )
        if not isinstance(expr, ast.Call):
            return False
        func = expr.func
        if isinstance(func, ast.Name) and not self.flow.bindings(func):
            return False  # the builtin compile(): Python code
        if (self.flow.ctx.names.qualify(func) or "").startswith(("re.", "regex.")):
            return False  # a regular expression
        return _COMPILING.match(last_name(func) or "") is not None

    def _zone_info(self, expr: ast.expr) -> bool:
        """A ``ZoneInfo``: its ``key`` names a zone of the tz database (``ZoneInfo()``
        raises for any other), so it holds no quote. A parameter annotated ``ZoneInfo``,
        a name bound once to ``ZoneInfo(...)``, or that call."""
        if isinstance(expr, ast.Call):
            return last_name(expr.func) == "ZoneInfo"
        if not isinstance(expr, ast.Name):
            return False
        bindings = [b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION]
        if len(bindings) != 1:
            return False
        binding = bindings[0]
        if binding.kind is BindingKind.PARAMETER:
            return binding.annotation is not None and last_name(binding.annotation) == "ZoneInfo"
        return (
            binding.kind is BindingKind.ASSIGN
            and not binding.path
            and binding.value is not None
            and isinstance(binding.value, ast.Call)
            and last_name(binding.value.func) == "ZoneInfo"
        )

    def _new_uuid(self, expr: ast.expr) -> bool:
        """``uuid4()`` (any version): its text is hex digits and dashes, never SQL."""
        return (
            isinstance(expr, ast.Call)
            and self.flow.ctx.names.qualify(expr.func) in _UUID_FACTORIES
        )

    def _word_characters_kept(self, call: ast.Call) -> bool:
        """``re.sub(r"[^a-zA-Z0-9_]", "", name)``: every character outside letters, digits
        and underscores removed (or replaced by such), so no quote, space or semicolon is
        left to end the identifier."""
        if self.flow.ctx.names.qualify(call.func) != "re.sub" or len(call.args) != 3:
            return False
        if any(k.arg not in ("count", "flags") for k in call.keywords):
            return False
        pattern, replacement = call.args[0], call.args[1]
        return (
            isinstance(pattern, ast.Constant)
            and isinstance(pattern.value, str)
            and _REMOVES_NON_WORD.fullmatch(pattern.value) is not None
            and isinstance(replacement, ast.Constant)
            and isinstance(replacement.value, str)
            and re.fullmatch(r"\w*", replacement.value, re.ASCII) is not None
        )

    def _quoted_column(self, call: ast.Call) -> bool:
        """``sa.column(name)`` spliced into text renders as an identifier, quoted (with its
        quotes doubled) whenever it needs to be; ``is_literal=True`` renders it as is, and
        ``sa.table()`` never quotes."""
        if self.flow.ctx.names.sqla_name(call.func) != "column":
            return False
        literal = next((k.value for k in call.keywords if k.arg == "is_literal"), None)
        return literal is None or (isinstance(literal, ast.Constant) and literal.value is False)

    def _project_quoting(self, call: ast.Call) -> bool:
        """A project helper, in any module, that quotes its argument as an identifier."""
        if not isinstance(call.func, (ast.Name, ast.Attribute)):
            return False
        ctx = self.flow.ctx
        function = ctx.index.function(ctx.names.qualify(call.func))
        return function is not None and function.quotes

    def _call(self, call: ast.Call) -> StringValue:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "compile" and self._compiled(call):
            return _STATIC_STR  # `str(stmt.compile(...))`, `f"EXPLAIN {stmt.compile()}"`
        if (
            last_name(func) in _QUOTING
            or escapes_identifier_quotes(call)
            or self._quoted_column(call)
            or self._project_quoting(call)
        ):
            return _STATIC_STR
        if self._new_uuid(call):
            return _STATIC  # str() of it is fixed-alphabet text
        if self.flow.ctx.names.sqla_name(func) == "quoted_name" and call.args:
            # A str subclass that only asks the compiler to quote it: spliced into text,
            # it is its value as is.
            inner = self.value(call.args[0])
            return StringValue(inner.state, True, inner.interpolations)
        if self._word_characters_kept(call):
            return _STATIC_STR
        if isinstance(func, ast.Attribute):
            if func.attr == "format":
                base = self.value(func.value)
                if not base.is_str:
                    return _OPAQUE
                operands: list[tuple[ast.expr, StringValue]] = [(func.value, base)]
                names = _format_identifiers(func.value, call)
                for arg in call.args:
                    if isinstance(arg, ast.Starred):
                        operands.append((arg.value, _OPAQUE))
                    else:
                        operands.append((arg, self.value(arg)))
                for keyword in call.keywords:
                    value = self.value(keyword.value) if keyword.arg is not None else _OPAQUE
                    operands.append((keyword.value, value))
                operands = [
                    (node, _as_identifier(node, value, HOW_FORMAT, call))
                    if id(node) in names
                    else (node, value)
                    for node, value in operands
                ]
                return self.build(operands, HOW_FORMAT, call)
            if func.attr == "join" and len(call.args) == 1 and not call.keywords:
                separator = self.value(func.value)
                if not separator.is_str:
                    return _OPAQUE
                parts = [(func.value, separator), *self.elements(call.args[0])]
                return self.build(parts, HOW_JOIN, call)
            if func.attr == "replace" and len(call.args) >= 2:
                base = self.value(func.value)
                if not base.is_str:
                    return _OPAQUE
                return self.build(
                    [(func.value, base), (call.args[1], self.value(call.args[1]))],
                    HOW_REPLACE, call,
                )
            if func.attr in _STR_PRESERVING:
                base = self.value(func.value)
                return base if base.is_str else _OPAQUE
            if func.attr == "get" and call.args:
                container = self._literal_container(func.value)
                if container is not None:
                    values = [*container, *(self.value(d) for d in call.args[1:2])]
                    return self.either(values)
                if self.reflected_name(call):
                    return _STATIC_STR
            if func.attr == "get" and len(call.args) <= 1 and self._literal_context_var(func.value):
                default = [self.value(a) for a in call.args]
                return self.either([_STATIC_STR, *default])
        elif isinstance(func, ast.Name) and not self.flow.bindings(func):
            if func.id in _NUMERIC_BUILTINS:
                return _STATIC
            if (
                func.id in ("max", "min")
                and len(call.args) > 1
                and not call.keywords
                and not any(isinstance(a, ast.Starred) for a in call.args)
            ):
                # Returns one of its arguments: `max(0, int(ms))` is a number.
                return self.either([self.value(a) for a in call.args])
            if func.id in ("str", "repr") and len(call.args) == 1:
                inner = self.value(call.args[0])
                return StringValue(inner.state, True, inner.interpolations)
            if func.id == "str" and not call.args:
                return _STATIC_STR
        summary = self._helper_summary(call)
        if summary is not None and summary[0].state is ValueState.STATIC:
            return summary[0]
        return _OPAQUE

    # Helpers of the module -----------------------------------------------------------
    def module_function(self, func: ast.expr) -> ast.FunctionDef | None:
        """The plain function of this module that ``func`` names (defined once at module
        level, undecorated, not async): what a call to it runs is in this file."""
        if not isinstance(func, ast.Name):
            return None
        bindings = self.flow.bindings(func)
        if len(bindings) != 1 or bindings[0].kind is not BindingKind.DEFINITION:
            return None
        node = bindings[0].node
        if (
            not isinstance(node, ast.FunctionDef)
            or node.decorator_list
            or self.flow.ctx.parent(node) is not self.flow.ctx.tree
        ):
            return None
        return node

    def own_method(self, func: ast.expr, static: bool = False) -> ast.FunctionDef | None:
        """The method ``self.name(...)`` calls from another method of the same class: the
        class body defines it once, undecorated (``static``: or a static or class
        method, for a caller that reads only what it returns), not async (a subclass
        overriding it is not looked for)."""
        if not isinstance(func, ast.Attribute) or not isinstance(func.value, ast.Name):
            return None
        around = _method_around(self.flow.ctx, func)
        if around is None:
            return None
        caller, cls = around
        params = [*caller.args.posonlyargs, *caller.args.args]
        if not params or params[0].arg != func.value.id or any(
            isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
            for d in caller.decorator_list
        ):
            return None
        defined = [
            stmt
            for stmt in cls.body
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign))
            and (
                stmt.name == func.attr
                if not isinstance(stmt, ast.Assign)
                else any(isinstance(t, ast.Name) and t.id == func.attr for t in stmt.targets)
            )
        ]
        if len(defined) != 1:
            return None
        method = defined[0]
        if not isinstance(method, ast.FunctionDef):
            return None
        allowed = ("staticmethod", "classmethod") if static else ()
        if any(not (isinstance(d, ast.Name) and d.id in allowed) for d in method.decorator_list):
            return None
        return method

    def _fixed_elements(self, binding: Binding) -> bool:
        if binding.kind is not BindingKind.PARAMETER:
            return False
        assumed = self._assumed(binding)
        if assumed is not None:
            return assumed in ("elements", "both")
        return self._parameter_fixed(binding, "elements")

    def _parameter_fixed(self, binding: Binding, part: _Part) -> bool:
        """Whether every call of the parameter's function passes fixed text for it (or,
        for ``part`` "elements", an iterable of fixed text; "values", a dict literal of
        fixed text values): a helper of this module that no other module imports and that
        nothing uses but by calling it here."""
        root = self._root
        cuts = root._cuts
        fixed = root._parameter_fixed_here(binding, part)
        if root is not self and root._cuts != cuts:
            self._cuts += 1
        return fixed

    def _parameter_fixed_here(self, binding: Binding, part: _Part) -> bool:
        function = self._internal_function(binding)
        if function is None:
            return False
        key = (id(function), binding.name, part)
        if key in self._params:
            known = self._params[key]
            if known is None:
                self._cuts += 1  # a recursive call: decided by the other calls
                return False
            return known
        if self._param_depth >= _MAX_CALL_DEPTH:
            self._cuts += 1
            return False
        calls = self._calls_of(function)
        if not calls:
            return self._never_called(function)
        self._params[key] = None
        self._param_depth += 1
        cuts = self._cuts
        try:
            fixed = True
            for call in calls:
                argument = call_arguments(call, function).get(binding.name)
                if argument is None:
                    fixed = False
                elif part == "elements":
                    fixed = all(v.state is ValueState.STATIC for _, v in self.elements(argument))
                elif part == "values":
                    if isinstance(argument, ast.Name):
                        argument = self._single_literal(argument) or argument
                    fixed = isinstance(argument, ast.Dict) and all(
                        self.value(v).state is ValueState.STATIC for v in argument.values
                    )
                else:
                    fixed = self.value(argument).state is ValueState.STATIC
                if not fixed:
                    break
        finally:
            self._param_depth -= 1
        if self._cuts == cuts:
            self._params[key] = fixed
        else:
            del self._params[key]
        return fixed

    def _internal_function(self, binding: Binding) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The function of the module whose parameter ``binding`` is, when no caller
        outside this module can reach it: undecorated, not in ``__all__``, imported by no
        other module but tests (and, unless its name is private, in a module other modules
        than tests import)."""
        ctx = self.flow.ctx
        function = None
        for stmt in ctx.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                binding.node is a for a in _named_params(stmt)
            ):
                function = stmt
                break
        if function is None:
            return self._local_function(binding)
        if function.decorator_list:
            return None
        # Tests importing a helper to test it are no callers a request reaches.
        imported = ctx.index.imported_names(ctx.facts.module, by_tests=False)
        if "*" in imported:
            return None
        if function.name in imported and self._outside_calls(function) is None:
            return None
        if not function.name.startswith("_") and not imported and not _alembic_revision(ctx.tree):
            # A module nothing in the project imports may be what outside callers import;
            # Alembic loads a revision by its path and calls only upgrade()/downgrade().
            return None
        if function.name in _exported(ctx.tree):
            return None
        return function

    def _never_called(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        """Whether nothing in the project can call the private module-level ``function``:
        its name is not used in the module nor by other modules (tests aside), and the
        module looks up no name of its own at run time (``globals()``, ``vars()``,
        ``sys.modules``). Nothing passes its parameters anything."""
        if not function.name.startswith("_") or function not in self.flow.ctx.tree.body:
            return False
        if self._call_sites is None:
            self._call_sites = name_uses(self.flow.ctx.tree)
        if function.name in self._call_sites or self._outside_calls(function) != []:
            return False
        return not any(
            (isinstance(node, ast.Name) and node.id in ("globals", "vars"))
            or (
                isinstance(node, ast.Attribute)
                and node.attr == "modules"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            )
            for node in ast.walk(self.flow.ctx.tree)
        )

    def _local_function(self, binding: Binding) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The undecorated function defined in another function whose parameter
        ``binding`` is (``def _sev_expr(severity):`` in a method): only the enclosing
        function can call it, unless it hands it on (see _calls_of)."""
        ctx = self.flow.ctx
        arguments = ctx.parent(binding.node)
        function = ctx.parent(arguments) if arguments is not None else None
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        if function.decorator_list or self._enclosing(function) is None:
            return None
        return function

    def _enclosing(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        return next(
            (
                a for a in self.flow.ctx.ancestors(function)
                if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))
            ),
            None,
        )

    def _local_calls(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Call]:
        """The calls of a function defined in another, in the enclosing function; []
        when its name is used otherwise there (returned, passed on, stored)."""
        scope = self._enclosing(function)
        assert scope is not None
        calls = [
            node for node in ast.walk(scope)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == function.name
        ]
        uses = sum(
            1 for node in ast.walk(scope) if isinstance(node, ast.Name) and node.id == function.name
        )
        return calls if uses == len(calls) else []

    def _calls_of(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Call]:
        """The calls of ``function`` in this module; [] when its name is used otherwise
        too (passed as a callback, stored, rebound), which callers we cannot see."""
        if function not in self.flow.ctx.tree.body:
            calls = self._local_calls(function)
            for call in calls:
                assert isinstance(call.func, ast.Name)
                bindings = self.flow.bindings(call.func)
                if len(bindings) != 1 or bindings[0].node is not function:
                    return []
            return calls
        if self._call_sites is None:
            self._call_sites = name_uses(self.flow.ctx.tree)
        uses, calls = self._call_sites.get(function.name, (0, []))
        if uses != len(calls):
            return []
        for call in calls:
            assert isinstance(call.func, ast.Name)
            bindings = self.flow.bindings(call.func)
            if len(bindings) != 1 or bindings[0].node is not function:
                return []
        return [*calls, *(self._outside_calls(function) or ())]

    def _outside_calls(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> list[ast.Call] | None:
        """Other modules' calls of ``function``, each a stand-in call passing a literal
        where they pass one and an unknown name elsewhere; None when one of them may use
        the function otherwise."""
        known = self._outside.get(id(function))
        if known is not None:
            return known
        ctx = self.flow.ctx
        shapes = ctx.index.outside_calls(f"{ctx.facts.module}.{function.name}")
        if shapes is None:
            return None
        calls = [_stand_in_call(function.name, shape) for shape in shapes]
        self._outside[id(function)] = calls
        return calls

    def _helper_summary(self, call: ast.Call) -> _Summary | None:
        """What a helper of this module returns at ``call``, its parameters standing for
        what this call passes: ``get_column_def(cols, "fee", "null")`` returns one of its
        arguments or a literal, so it is fixed text when those arguments are."""
        function = self.module_function(call.func)
        bound = 0
        if function is None:
            function = self.own_method(call.func)
            bound = 1
        if function is None:
            return None
        values: set[str] = set()
        elements: set[str] = set()
        for name, argument in call_arguments(call, function, bound).items():
            if argument is None:
                continue
            if self.value(argument).state is ValueState.STATIC:
                values.add(name)
            if all(v.state is ValueState.STATIC for _, v in self.elements(argument)):
                elements.add(name)
        key = (id(function), frozenset(values), frozenset(elements))
        if key in self._calls:
            summary = self._calls[key]
            if summary is None:
                self._cuts += 1  # a recursive call: known once the outer one is
            return summary
        if self._depth >= _MAX_CALL_DEPTH:
            self._cuts += 1
            return None
        returned = _returned(function)
        if not returned:
            return None
        self._calls[key] = None
        inner = StringFlow(
            self.flow,
            assume=_Assumption(function, key[1], key[2]),
            calls=self._calls,
            depth=self._depth + 1,
            root=self._root,
        )
        value = self.either([inner.value(r) for r in returned])
        fixed = all(v.state is ValueState.STATIC for r in returned for _, v in inner.elements(r))
        summary = (value, fixed)
        if inner._cuts:
            # Cut short (a recursion, the depth limit): good for this call, not for reuse.
            self._cuts += 1
            del self._calls[key]
        else:
            self._calls[key] = summary
        return summary

    def _name(self, name: ast.Name) -> StringValue:
        bindings = [b for b in self.flow.bindings(name) if b.kind is not BindingKind.ANNOTATION]
        constant = is_constant_name(name.id)
        if not bindings:
            return _STATIC_STR if constant else _OPAQUE
        guards = self._allowlist_guards(name)
        values = [
            _STATIC_STR
            if any(
                node_position(b.node) < node_position(g) and not contains_node(g, b.node)
                for g in guards
            )
            else self._binding(b)
            for b in bindings
        ]
        result = self.either(values)
        if constant and result.state is ValueState.OPAQUE:
            # An UPPER_CASE name imported or computed at module level: a constant by
            # convention (settings, table names), not a request's value.
            return _STATIC_STR
        return result

    def _binding(self, binding: Binding) -> StringValue:
        return self._guarded(binding, self._binding_value)

    def _allowlist_guards(self, name: ast.Name) -> list[ast.stmt]:
        """The ``if`` statements of the function that let ``name`` past only as one of a
        fixed set of strings: an enclosing ``if x in ("asc", "desc"):`` (or ``and`` such a
        test) whose body holds the use, and an earlier ``if x not in ALLOWED:`` (or ``or``
        such a test) whose body binds ``x`` again or leaves (``raise``, ``return``…). A
        binding made before such a statement reaches the use only as a member."""
        guards: list[ast.stmt] = []
        ctx = self.flow.ctx
        child: ast.AST = name
        for ancestor in ctx.ancestors(name):
            if (
                isinstance(ancestor, ast.If)
                and any(contains_node(s, name) for s in ancestor.body)
                and self._membership(ancestor.test, name.id, negated=False)
            ):
                guards.append(ancestor)
            for field in ("body", "orelse", "finalbody"):
                block = getattr(ancestor, field, None)
                if not isinstance(block, list) or child not in block:
                    continue
                for stmt in block[: block.index(child)]:
                    if (
                        isinstance(stmt, ast.If) and self._narrows(stmt, name.id)
                    ) or self._validates(stmt, name.id):
                        guards.append(stmt)
            if isinstance(ancestor, NESTED_SCOPES):
                break
            child = ancestor
        return guards

    def _validates(self, stmt: ast.stmt, name: str) -> bool:
        """``_validate(table, ALLOWED_TABLES, "table")`` as a statement (or its result
        assigned): a helper of the module whose body starts by leaving unless the
        parameter ``name`` is passed for is a member of what it is given (``if identifier
        not in allowed: raise ValueError(...)``), called with a fixed set of strings."""
        value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
        if not isinstance(value, ast.Call):
            return False
        function = self.module_function(value.func)
        if function is None:
            return False
        received = call_arguments(value, function)
        checked = [
            param for param, arg in received.items()
            if isinstance(arg, ast.Name) and arg.id == name
        ]
        for inner in function.body:
            if isinstance(inner, ast.Expr) and isinstance(inner.value, ast.Constant):
                continue  # the docstring
            if not (
                isinstance(inner, ast.If)
                and not inner.orelse
                and any(isinstance(s, ast.Raise) for s in inner.body)
                and isinstance(inner.test, ast.Compare)
                and len(inner.test.ops) == 1
                and isinstance(inner.test.ops[0], ast.NotIn)
                and isinstance(inner.test.left, ast.Name)
                and inner.test.left.id in checked
            ):
                return False
            allowed: ast.expr | None = inner.test.comparators[0]
            if isinstance(allowed, ast.Name):
                # The helper's parameter: what this call passes for it.
                allowed = received.get(allowed.id)
            elif not isinstance(allowed, (ast.Tuple, ast.List, ast.Set)):
                return False
            if allowed is None:
                return False
            elements = self.elements(allowed)
            return bool(elements) and all(v.state is ValueState.STATIC for _, v in elements)
        return False

    def _narrows(self, stmt: ast.If, name: str, depth: int = 0) -> bool:
        """Whether ``name`` leaves ``stmt`` only as a member of a fixed set of strings, or
        bound again in it: on each branch the test makes it a member, or the branch binds
        it, leaves, or holds such a statement (``if x == "state": ... else: if x not in
        COLUMNS: x = "id"``)."""
        if depth > 4:
            return False
        branches = (
            (stmt.body, self._membership(stmt.test, name, negated=False)),
            (stmt.orelse, self._membership(stmt.test, name, negated=True)),
        )
        return all(
            member
            or _rebinds_or_leaves(block, name)
            or any(isinstance(s, ast.If) and self._narrows(s, name, depth + 1) for s in block)
            for block, member in branches
        )

    def _membership(self, test: ast.expr, name: str, *, negated: bool) -> bool:
        """Whether ``test`` being true means ``name`` is (``negated``: is not) one of a
        collection of fixed strings, directly or as one operand of ``and`` (``or``)."""
        if isinstance(test, ast.BoolOp):
            joins = ast.Or if negated else ast.And
            return isinstance(test.op, joins) and any(
                self._membership(v, name, negated=negated) for v in test.values
            )
        if negated and isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return self._membership(test.operand, name, negated=False)
        if not (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.left, ast.Name)
            and test.left.id == name
        ):
            return False
        op = test.ops[0]
        if isinstance(op, ast.NotEq if negated else ast.Eq):
            # `x == "state"`: a set of one.
            return self.value(test.comparators[0]).state is ValueState.STATIC
        if not isinstance(op, ast.NotIn if negated else ast.In):
            return False
        elements = self.elements(test.comparators[0])
        return bool(elements) and all(v.state is ValueState.STATIC for _, v in elements)

    def _binding_value(self, binding: Binding) -> StringValue:
        kind = binding.kind
        if kind is BindingKind.ASSIGN and binding.value is not None:
            if binding.path:
                return self._element_at(binding.value, binding.path)
            return self.value(binding.value)
        if kind is BindingKind.AUG_ASSIGN and binding.value is not None and binding.op is not None:
            before = [
                b for b in self.flow.bindings_before(binding)
                if b.kind is not BindingKind.ANNOTATION
            ]
            previous = self.either([self._binding(b) for b in before]) if before else _OPAQUE
            assert binding.target is not None
            return self.binop(binding.op, binding.target, binding.value, binding.node, previous)
        if kind is BindingKind.LOOP and binding.value is not None:
            return self._element_at(binding.value, binding.path)
        if kind is BindingKind.PARAMETER and (
            (binding.annotation is not None and _literal_strings(binding.annotation))
            or self.enum_typed(binding)
        ):
            return _STATIC_STR
        if kind is BindingKind.PARAMETER:
            assumed = self._assumed(binding)
            if assumed in ("value", "both") or (
                assumed is None and self._parameter_fixed(binding, "value")
            ):
                return _STATIC_STR
        return _OPAQUE

    def _assumed(self, binding: Binding) -> str | None:
        """For a parameter of the helper being summarised: "value", "elements" or "both"
        when this call passes fixed text for it, "" when not; None for other bindings."""
        assume = self._assume
        if assume is None or not any(binding.node is a for a in _named_params(assume.function)):
            return None
        fixed = binding.name in assume.values
        fixed_elements = binding.name in assume.elements
        if fixed and fixed_elements:
            return "both"
        return "value" if fixed else "elements" if fixed_elements else ""

    def _subscript(self, expr: ast.Subscript) -> StringValue:
        picked = self._literals(expr)
        if picked is not None:
            # `role["name"]` for `role in ROLES`, a literal table of literal rows.
            return self.either([self.value(p) for p in picked])
        container = self._literal_container(expr.value)
        if container is not None:
            return self.either(container)
        if self.reflected_name(expr):
            return _STATIC_STR
        return _OPAQUE

    def _literals(self, expr: ast.expr, depth: int = 0) -> list[ast.expr] | None:
        """The literal expressions ``expr`` may evaluate to: a literal itself, a name
        bound only to literals (and not filled later), an element of a literal table a
        loop walks, or a constant key's entry in such literals (``ROWS[0]["name"]``);
        None when any of it is not a literal of this file."""
        if depth > 6:
            return None
        if isinstance(expr, (ast.Constant, ast.Dict, ast.List, ast.Tuple, ast.Set)):
            return [expr]
        if isinstance(expr, ast.Name):
            bindings = [
                b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION
            ]
            if not bindings or self.flow.item_stores(expr) or self.flow.method_calls(
                expr, ("update", "setdefault", "append", "extend", "insert", "add")
            ):
                return None
            found: list[ast.expr] = []
            for binding in bindings:
                if binding.value is None or binding.path:
                    return None
                if binding.kind is BindingKind.ASSIGN:
                    inner = self._literals(binding.value, depth + 1)
                elif binding.kind is BindingKind.LOOP:
                    inner = self._items(binding.value, depth + 1)
                else:
                    return None
                if inner is None:
                    return None
                found.extend(inner)
            return found
        if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant):
            containers = self._literals(expr.value, depth + 1)
            if containers is None:
                return None
            key = expr.slice.value
            picked: list[ast.expr] = []
            for container in containers:
                if isinstance(container, ast.Dict):
                    keys = [k.value if isinstance(k, ast.Constant) else k for k in container.keys]
                    if any(not isinstance(k, (str, int)) for k in keys) or key not in keys:
                        return None
                    picked.append(container.values[keys.index(key)])
                elif isinstance(container, (ast.List, ast.Tuple)) and isinstance(key, int):
                    if any(isinstance(e, ast.Starred) for e in container.elts):
                        return None
                    if not -len(container.elts) <= key < len(container.elts):
                        return None
                    picked.append(container.elts[key])
                else:
                    return None
            found = []
            for item in picked:
                inner = self._literals(item, depth + 1)
                if inner is None:
                    return None
                found.extend(inner)
            return found
        return None

    def _items(self, iterable: ast.expr, depth: int) -> list[ast.expr] | None:
        """The literal elements of a literal list, tuple or set ``iterable`` names."""
        containers = self._literals(iterable, depth)
        if containers is None:
            return None
        found: list[ast.expr] = []
        for container in containers:
            if not isinstance(container, (ast.List, ast.Tuple, ast.Set)) or any(
                isinstance(e, ast.Starred) for e in container.elts
            ):
                return None
            for element in container.elts:
                inner = self._literals(element, depth + 1)
                if inner is None:
                    return None
                found.extend(inner)
        return found

    def _literal_container(self, expr: ast.expr, depth: int = 0) -> list[StringValue] | None:
        """The values of a dict/list/tuple literal (or a name bound only to such literals)."""
        if isinstance(expr, ast.Dict):
            if any(key is None for key in expr.keys):
                return None
            return [self.value(v) for v in expr.values]
        if isinstance(expr, (ast.List, ast.Tuple)):
            if any(isinstance(e, ast.Starred) for e in expr.elts):
                return None
            return [self.value(e) for e in expr.elts]
        if isinstance(expr, ast.Name) and depth < 4:
            bindings = self.flow.bindings(expr)
            if not bindings:
                return None
            collected: list[StringValue] = []
            for binding in bindings:
                if binding.kind is BindingKind.ANNOTATION:
                    continue
                if binding.kind is not BindingKind.ASSIGN or binding.value is None or binding.path:
                    return None
                inner = self._literal_container(binding.value, depth + 1)
                if inner is None:
                    return None
                collected.extend(inner)
            # A literal mapping that is filled later (`COLUMNS[k] = v`) is still written
            # by this file, but one filled from input is not: require no item assignment.
            if self.flow.method_calls(expr, ("update", "setdefault", "append", "extend", "insert")):
                return None
            return collected
        return None

    # Sequences ---------------------------------------------------------------------
    def elements(self, expr: ast.expr, depth: int = 0) -> list[tuple[ast.expr, StringValue]]:
        """The values an iterable may yield (for ``str.join`` and ``for`` targets)."""
        if depth > 8:
            return [(expr, _OPAQUE)]
        if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
            found: list[tuple[ast.expr, StringValue]] = []
            for element in expr.elts:
                if isinstance(element, ast.Starred):
                    found.extend(self.elements(element.value, depth + 1))
                else:
                    found.append((element, self.value(element)))
            return found
        if isinstance(expr, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return [(expr.elt, self.value(expr.elt))]
        if isinstance(expr, ast.DictComp):
            return [(expr.key, self.value(expr.key))]
        if isinstance(expr, ast.Dict):
            return [(k, self.value(k)) for k in expr.keys if k is not None]
        if isinstance(expr, ast.Constant):
            return [(expr, _STATIC_STR)]
        if isinstance(expr, ast.IfExp):
            return self.elements(expr.body, depth + 1) + self.elements(expr.orelse, depth + 1)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self.elements(expr.left, depth + 1) + self.elements(expr.right, depth + 1)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
            if isinstance(expr.left, (ast.List, ast.Tuple)):
                return self.elements(expr.left, depth + 1)
            if isinstance(expr.right, (ast.List, ast.Tuple)):
                return self.elements(expr.right, depth + 1)
            return [(expr, _OPAQUE)]
        if isinstance(expr, ast.Call):
            return self._call_elements(expr, depth)
        if isinstance(expr, ast.Name):
            return self._name_elements(expr, depth)
        if isinstance(expr, ast.Subscript) and self.reflected_name(expr):
            # `index["column_names"]`: a list of names from the catalogue.
            return [(expr, _STATIC_STR)]
        if isinstance(expr, ast.Subscript):
            items = self._items(expr, depth + 1)
            if items is not None:
                # `role["permissions"]` for `role in ROLES`: a literal list in a literal row.
                return [(item, self.value(item)) for item in items]
        if isinstance(expr, ast.Attribute) and (
            _constant_attribute(expr) or self.enum_member(expr) or self.class_constant(expr)
        ):
            return [(expr, _STATIC_STR)]
        return [(expr, _OPAQUE)]

    def _call_elements(self, call: ast.Call, depth: int) -> list[tuple[ast.expr, StringValue]]:
        func = call.func
        if isinstance(func, ast.Name) and not self.flow.bindings(func):
            if func.id == "range":
                return [(call, _STATIC)]
            if func.id in ("list", "tuple", "set", "sorted", "reversed", "frozenset") and call.args:
                return self.elements(call.args[0], depth + 1)
            if func.id == "map" and len(call.args) == 2:
                mapper = call.args[0]
                if isinstance(mapper, ast.Name) and mapper.id in ("str", *_NUMERIC_BUILTINS):
                    if mapper.id in _NUMERIC_BUILTINS:
                        return [(call, _STATIC)]
                    return self.elements(call.args[1], depth + 1)
            if func.id == "filter" and len(call.args) == 2:
                return self.elements(call.args[1], depth + 1)
        if (
            isinstance(func, ast.Attribute)
            and func.attr in _REFLECTED_NAME_LISTS
            and self.inspector(func.value)
        ):
            return [(call, _STATIC_STR)]
        summary = self._helper_summary(call)
        if summary is not None and summary[1]:
            return [(call, _STATIC_STR)]
        keys = isinstance(func, ast.Attribute) and func.attr == "keys" and not call.args
        if keys and isinstance(func, ast.Attribute) and self.schema_object(func.value):
            # `table.c.keys()`, `inspect(Model).columns.keys()`: the schema's own names.
            return [(call, _STATIC_STR)]
        if isinstance(func, ast.Attribute) and func.attr in ("keys", "values") and not call.args:
            container = func.value
            if isinstance(container, ast.Dict):
                chosen = container.keys if func.attr == "keys" else container.values
                return [(e, self.value(e)) for e in chosen if e is not None]
            if isinstance(container, ast.Name):
                literal = self._single_literal(container)
                if isinstance(literal, ast.Dict) and not self.flow.item_stores(container):
                    chosen = literal.keys if func.attr == "keys" else literal.values
                    return [(e, self.value(e)) for e in chosen if e is not None]
                if func.attr == "keys":
                    filled = self._dict_keys(container, depth)
                    if filled is not None:
                        return filled
            if (
                func.attr == "keys"
                and isinstance(container, ast.Subscript)
                and isinstance(container.value, ast.Name)
            ):
                # `rows[0].keys()`: the keys of the dicts the list was filled with.
                filled = self._element_dict_keys(container.value, depth)
                if filled is not None:
                    return filled
        return [(call, _OPAQUE)]

    def _element_dict_keys(
        self, name: ast.Name, depth: int
    ) -> list[tuple[ast.expr, StringValue]] | None:
        """The keys of the dicts a list bound to ``name`` holds: the list literal's dicts
        and those of every ``name.append(row)`` before the use, each a dict literal or a
        name :meth:`_dict_keys` knows. None when anything else may have gone in."""
        literal = self._single_literal(name)
        if not isinstance(literal, ast.List) or self.flow.item_stores(name):
            return None
        if self.flow.method_calls(name, ("extend", "insert", "__setitem__", "__iadd__")):
            return None
        items: list[ast.expr] = list(literal.elts)
        for call in self.flow.method_calls(name, ("append",)):
            if len(call.args) != 1 or call.keywords:
                return None
            items.append(call.args[0])
        found: list[tuple[ast.expr, StringValue]] = []
        for item in items:
            if isinstance(item, ast.Dict) and all(key is not None for key in item.keys):
                found.extend((key, self.value(key)) for key in item.keys if key is not None)
            elif isinstance(item, ast.Name) and (keys := self._dict_keys(item, depth + 1)):
                found.extend(keys)
            else:
                return None
        return found or None

    def _dict_keys(self, name: ast.Name, depth: int) -> list[tuple[ast.expr, StringValue]] | None:
        """The keys a dict bound to ``name`` may hold: those of the dict literals (or of the
        names of dict literals) it is bound to, and of every ``name[key] = ...`` before the
        use. None when one of its values is not a dict this file builds."""
        if depth > 8:
            return None
        bindings = [b for b in self.flow.bindings(name) if b.kind is not BindingKind.ANNOTATION]
        if not bindings:
            return None
        found: list[tuple[ast.expr, StringValue]] = []
        for binding in bindings:
            value = binding.value
            if binding.kind is not BindingKind.ASSIGN or binding.path or value is None:
                return None
            if isinstance(value, ast.Dict):
                for key, item in zip(value.keys, value.values, strict=True):
                    if key is not None:
                        found.append((key, self.value(key)))
                    elif isinstance(item, ast.Name):
                        inner = self._dict_keys(item, depth + 1)
                        if inner is None:
                            return None
                        found.extend(inner)
                    else:
                        return None
            elif isinstance(value, ast.DictComp):
                found.append((value.key, self.value(value.key)))
            elif isinstance(value, ast.Name):
                inner = self._dict_keys(value, depth + 1)
                if inner is None:
                    return None
                found.extend(inner)
            else:
                return None
        if self.flow.method_calls(name, ("update", "setdefault", "__setitem__")):
            return None
        found.extend(
            (store.slice, self.value(store.slice)) for store in self.flow.item_stores(name)
        )
        return found

    def _name_elements(self, name: ast.Name, depth: int) -> list[tuple[ast.expr, StringValue]]:
        bindings = [b for b in self.flow.bindings(name) if b.kind is not BindingKind.ANNOTATION]
        if not bindings:
            return [(name, _STATIC_STR if is_constant_name(name.id) else _OPAQUE)]
        found: list[tuple[ast.expr, StringValue]] = []
        for binding in bindings:
            plain = binding.kind is BindingKind.ASSIGN and not binding.path
            if plain and binding.value is not None:
                found.extend(self.elements(binding.value, depth + 1))
            elif binding.kind is BindingKind.AUG_ASSIGN and binding.value is not None:
                found.extend(self.elements(binding.value, depth + 1))
                for before in self.flow.bindings_before(binding):
                    if before.kind is BindingKind.ASSIGN and before.value is not None:
                        found.extend(self.elements(before.value, depth + 1))
            elif is_constant_name(name.id) or self._fixed_elements(binding):
                found.append((name, _STATIC_STR))
            elif (parts := self._loop_parts(binding, depth)) is not None:
                # `for c in columns` where `columns` is one row's list of a literal table.
                for part in parts:
                    found.extend(self.elements(part, depth + 1))
            else:
                found.append((name, _OPAQUE))
        values = [b.value for b in bindings if b.kind is BindingKind.ASSIGN and not b.path]
        for store in self.flow.item_stores(name):
            if any(isinstance(v, (ast.Dict, ast.DictComp)) for v in values):
                # `data[key] = ...`: iterating the dict yields the key.
                found.append((store.slice, self.value(store.slice)))
            elif any(isinstance(v, (ast.List, ast.ListComp)) for v in values):
                # `parts[i] = value`: the value is an element from then on.
                parent = self.flow.ctx.parent(store)
                stored = getattr(parent, "value", None)
                if isinstance(stored, ast.expr):
                    found.append((stored, self.value(stored)))
                else:
                    found.append((store, _OPAQUE))
        for call in self.flow.method_calls(name, ("append", "extend", "insert", "add")):
            attr = call.func.attr if isinstance(call.func, ast.Attribute) else ""
            if attr == "extend" and call.args:
                found.extend(self.elements(call.args[0], depth + 1))
            elif attr == "insert" and len(call.args) == 2:
                found.append((call.args[1], self.value(call.args[1])))
            elif call.args:
                found.append((call.args[0], self.value(call.args[0])))
        return found

    def _loop_parts(self, binding: Binding, depth: int) -> list[ast.expr] | None:
        """The literal expressions a loop variable takes, when it loops over a literal
        table (``for table, columns in TEXT_COLUMNS.items()``: each list of ``columns``)."""
        if binding.kind is not BindingKind.LOOP or binding.value is None or depth >= 4:
            return None
        iterable = self._unchanged_literal(binding.value)
        path = binding.path
        if (
            isinstance(iterable, ast.Call)
            and isinstance(iterable.func, ast.Attribute)
            and iterable.func.attr == "items"
            and not iterable.args
            and path
        ):
            mapping = self._unchanged_literal(iterable.func.value)
            if not isinstance(mapping, ast.Dict) or any(k is None for k in mapping.keys):
                return None
            keys = [k for k in mapping.keys if k is not None]
            return _unpacked(keys if path[0] == 0 else mapping.values, path[1:])
        if isinstance(iterable, (ast.List, ast.Tuple, ast.Set)):
            return _unpacked(iterable.elts, path)
        return None

    def binding_helper(self, expr: ast.expr) -> ast.FunctionDef | None:
        """The helper of this module whose result ``expr`` is (its call, or a name assigned
        once from it) when every string it returns is an f-string naming bind parameters
        (``f"({table}.{field} ->> :key_{n}) {op} :value_{n}"``): its caller binds the
        values, and what it splices in besides is the statement's structure."""
        call = self._single_literal(expr) if isinstance(expr, ast.Name) else expr
        if not isinstance(call, ast.Call):
            return None
        function = self.module_function(call.func)
        if function is None:
            return None
        returned = _returned(function)
        if not returned or not all(
            isinstance(r, ast.JoinedStr)
            and any(
                isinstance(part, ast.Constant)
                and isinstance(part.value, str)
                and _PLACEHOLDER.search(part.value)
                for part in r.values
            )
            for r in returned
        ):
            return None
        return function

    def leading_text(self, expr: ast.expr, depth: int = 0) -> str | None:
        """The literal text a string expression starts with (``"CREATE DATABASE {}"`` of
        its ``.format()``, the first part of ``" ".join(["CREATE INDEX ...", ...])``),
        following a name assigned once; None when it starts with a value."""
        if depth > 4:
            return None
        if isinstance(expr, ast.Name):
            literal = self._single_literal(expr)
            return self.leading_text(literal, depth + 1) if literal is not None else None
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Mod)):
            return self.leading_text(expr.left, depth + 1)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            if expr.func.attr == "format":
                return self.leading_text(expr.func.value, depth + 1)
            if expr.func.attr == "join" and len(expr.args) == 1:
                parts = expr.args[0]
                if isinstance(parts, ast.Name) and not (
                    self.flow.item_stores(parts) or self.flow.method_calls(parts, ("insert",))
                ):
                    # What append() and extend() add comes after the first part.
                    parts = self._single_literal(parts) or parts
                if isinstance(parts, (ast.List, ast.Tuple)) and parts.elts:
                    return self.leading_text(parts.elts[0], depth + 1)
            return None
        return _literal_text(expr, last=False)

    def _unchanged_literal(self, expr: ast.expr) -> ast.expr:
        """The literal a name is assigned once and never filled further, or ``expr``."""
        if not isinstance(expr, ast.Name):
            return expr
        literal = self._single_literal(expr)
        filled = self.flow.item_stores(expr) or self.flow.method_calls(expr, _FILLING)
        return literal if literal is not None and not filled else expr

    def _single_literal(self, name: ast.Name) -> ast.expr | None:
        bindings = self.flow.bindings(name)
        if len(bindings) == 1 and bindings[0].kind is BindingKind.ASSIGN and not bindings[0].path:
            return bindings[0].value
        return None

    def _element_at(self, iterable: ast.expr, path: tuple[int, ...], depth: int = 0) -> StringValue:
        """One element of ``iterable``, or the part of it at ``path`` when unpacked."""
        if not path:
            values = [v for _, v in self.elements(iterable)]
            return self.either(values) if values else _OPAQUE
        if isinstance(iterable, ast.IfExp) and depth < 4:
            # `ROLLBACK if undo else STEPS`: an element of one literal table or the other.
            return self.either(
                [self._element_at(b, path, depth + 1) for b in (iterable.body, iterable.orelse)]
            )
        head, rest = path[0], path[1:]
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name):
            builtin = not self.flow.bindings(iterable.func)
            if builtin and iterable.func.id == "enumerate" and iterable.args:
                return _STATIC if head == 0 else self._element_at(iterable.args[0], rest)
            if builtin and iterable.func.id == "zip" and head < len(iterable.args):
                return self._element_at(iterable.args[head], rest)
        if (
            isinstance(iterable, ast.Call)
            and isinstance(iterable.func, ast.Attribute)
            and iterable.func.attr == "items"
            and not iterable.args
        ):
            mapping = iterable.func.value
            if head == 0 and not rest and self.schema_object(mapping):
                return _STATIC_STR
            if isinstance(mapping, ast.Name):
                mapping = self._single_literal(mapping) or mapping
            if isinstance(mapping, ast.Dict) and not rest:
                chosen = mapping.keys if head == 0 else mapping.values
                return self.either([self.value(e) for e in chosen if e is not None])
            if isinstance(mapping, ast.Name) and not rest:
                # A helper's dict parameter, each caller passing a literal one (faraday's
                # `join_filters={'type': "'vulnerability_web'"}`).
                held = self.flow.bindings(mapping)
                if (
                    len(held) == 1
                    and held[0].kind is BindingKind.PARAMETER
                    and self._assumed(held[0]) is None
                    and self._parameter_fixed(held[0], "elements" if head == 0 else "values")
                ):
                    return _STATIC_STR
            return _OPAQUE
        source = iterable
        if isinstance(source, ast.Name):
            source = self._single_literal(source) or source
            if isinstance(source, (ast.IfExp, ast.Name)) and source is not iterable and depth < 4:
                return self._element_at(source, path, depth + 1)
            bindings = (
                self.flow.bindings(iterable)
                if isinstance(iterable, ast.Name) and source is iterable and depth < 4
                else []
            )
            rows = self._loop_parts(bindings[0], depth) if len(bindings) == 1 else None
            if rows is not None:
                # `for column, nullable in columns` where `columns` came from an outer
                # loop over a literal table: an element of one of its literal rows.
                return self.either([self._element_at(r, path, depth + 1) for r in rows])
        if isinstance(source, (ast.List, ast.Tuple)):
            parts: list[StringValue] = []
            for element in source.elts:
                if isinstance(element, (ast.Tuple, ast.List)) and head < len(element.elts):
                    inner = element.elts[head]
                    parts.append(self.value(inner) if not rest else self._element_at(inner, rest))
                else:
                    return _OPAQUE
            return self.either(parts)
        return _OPAQUE

    # Enum members ------------------------------------------------------------------
    def enum_member(self, expr: ast.Attribute) -> bool:
        """``Status.archived``, ``Status.archived.value`` or ``.name`` of a project enum:
        members are declared in the class body, so their text is fixed by the code."""
        member = expr.value if expr.attr in ("value", "name") else expr
        if not isinstance(member, ast.Attribute):
            return False
        owner = member.value
        root = owner
        while isinstance(root, ast.Attribute):
            root = root.value
        if not isinstance(root, ast.Name):
            return False
        # A local variable of that name is not the class.
        if any(
            b.kind not in (BindingKind.DEFINITION, BindingKind.IMPORT)
            for b in self.flow.bindings(root)
        ):
            return False
        return self._enum_class(self.flow.ctx.names.qualify(owner))

    def _enum_class(self, qualified: str | None) -> bool:
        """Whether ``qualified`` names an enum class of the project."""
        if qualified is None:
            return False
        index = self.flow.ctx.index
        return any(
            index.follow(base) in _ENUM_BASES
            for cls in index.lineage(qualified)
            for base in cls.bases
        )

    def enum_typed(self, binding: Binding) -> bool:
        """A parameter that holds a member of a project enum: annotated with the enum
        (``status: Status``, ``Status | None``), or ``self``/``cls`` in the enum's own
        methods. Its text, ``.value`` and ``.name`` are one of the members the class body
        declares, and frameworks (FastAPI, Typer, pydantic) reject anything else."""
        if binding.kind is not BindingKind.PARAMETER:
            return False
        if binding.annotation is not None:
            return self._enum_annotation(binding.annotation)
        function = self.flow.ctx.parent(binding.node)
        function = self.flow.ctx.parent(function) if isinstance(function, ast.arguments) else None
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return False
        params = [*function.args.posonlyargs, *function.args.args]
        cls = self.flow.ctx.parent(function)
        if not (params and params[0] is binding.node and isinstance(cls, ast.ClassDef)):
            return False
        if instance_receiver(function) is None:
            return False  # a static method, or `cls`: the class, whose attributes may be anything
        ctx = self.flow.ctx
        if ctx.parent(cls) is not ctx.tree:
            return False
        return self._enum_class(f"{ctx.facts.module}.{cls.name}" if ctx.facts.module else cls.name)

    def _enum_annotation(self, annotation: ast.expr, depth: int = 0) -> bool:
        if depth > 3:
            return False
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = string_annotation(annotation.value)
            return parsed is not None and self._enum_annotation(parsed, depth + 1)
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            sides = (annotation.left, annotation.right)
            nones = [s for s in sides if isinstance(s, ast.Constant) and s.value is None]
            return len(nones) < 2 and all(
                s in nones or self._enum_annotation(s, depth + 1) for s in sides
            )
        if isinstance(annotation, ast.Subscript) and last_name(annotation.value) == "Optional":
            return self._enum_annotation(annotation.slice, depth + 1)
        if isinstance(annotation, (ast.Name, ast.Attribute)):
            return self._enum_class(self.flow.ctx.names.qualify(annotation))
        return False

    def _enum_variable(self, expr: ast.expr) -> bool:
        """``status``, ``status.value``, ``self.name`` where the name holds an enum member."""
        if isinstance(expr, ast.Attribute) and expr.attr in ("value", "name"):
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return False
        bindings = [b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION]
        return bool(bindings) and all(self.enum_typed(b) for b in bindings)

    # Class attributes --------------------------------------------------------------
    def class_constant(self, expr: ast.Attribute) -> bool:
        """``cls._threshold``, ``self.page_size`` in a method, where the enclosing class
        body declares that attribute with a literal (``_threshold: ClassVar[float] = 0.5``)
        and no statement of the class assigns it again: its text is fixed by the code."""
        owner = expr.value
        if not isinstance(owner, ast.Name):
            return False
        ctx = self.flow.ctx
        method = _method_around(ctx, expr)
        if method is None:
            return False
        function, cls = method
        params = [*function.args.posonlyargs, *function.args.args]
        receiver = bool(params) and params[0].arg == owner.id
        if receiver and any(
            isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list
        ):
            receiver = False
        if not receiver and (
            owner.id != cls.name
            # The name bound to something else than the class (its own `class` statement
            # is the module's binding of it).
            or any(b.node is not cls for b in self.flow.bindings(owner))
        ):
            return False
        key = (id(cls), expr.attr)
        known = self._class_constants.get(key)
        if known is None:
            known = self._class_literal(cls, expr.attr)
            self._class_constants[key] = known
        return known

    def _class_literal(self, cls: ast.ClassDef, attr: str) -> bool:
        ctx = self.flow.ctx
        # `Filters.state = request.args["state"]` elsewhere in the module.
        if attr in self._stored_attributes(ctx.tree):
            return False
        own = class_literals(cls)
        if attr in own:
            return own[attr]
        # Declared by a base class of the project (another module included).
        if ctx.parent(cls) is not ctx.tree:
            return False
        qualname = f"{ctx.facts.module}.{cls.name}" if ctx.facts.module else cls.name
        for facts in islice(ctx.index.lineage(qualname), 1, None):
            if attr in facts.literals:
                return facts.literals[attr]
        return False

    def _stored_attributes(self, tree: ast.Module) -> frozenset[str]:
        if self._stored is None:
            self._stored = frozenset(
                node.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del))
            )
        return self._stored

    # Context variables -------------------------------------------------------------
    def _literal_context_var(self, expr: ast.expr) -> bool:
        """A ``ContextVar`` of this module whose default and every ``.set()`` in the
        project are literals (``BEGIN_MODE.set("IMMEDIATE")``): ``.get()`` reads one."""
        if not isinstance(expr, ast.Name):
            return False
        bindings = self.flow.bindings(expr)
        if len(bindings) != 1 or bindings[0].kind is not BindingKind.ASSIGN:
            return False
        binding = bindings[0]
        ctx = self.flow.ctx
        value = binding.value
        if (
            binding.path
            or not isinstance(value, ast.Call)
            or ctx.names.qualify(value.func) != "contextvars.ContextVar"
            or not any(stmt is binding.node for stmt in ctx.tree.body)
        ):
            return False
        default = call_keyword(value, "default")
        if default is not None and self.value(default.value).state is not ValueState.STATIC:
            return False
        qualified = ctx.names.qualify(expr)
        return qualified is not None and ctx.index.sets_only_literals(qualified)

    # Reflection --------------------------------------------------------------------
    def reflected_name(self, expr: ast.Subscript | ast.Call) -> bool:
        """``index["name"]``, ``fk.get("referred_table")`` of what an Inspector returned
        (``inspect(engine).get_indexes(t)``): a name the database catalogue holds."""
        if isinstance(expr, ast.Subscript):
            key: ast.expr = expr.slice
            record = expr.value
        else:
            func = expr.func
            if not isinstance(func, ast.Attribute) or not expr.args:
                return False
            key, record = expr.args[0], func.value
        return (
            isinstance(key, ast.Constant)
            and key.value in _REFLECTED_KEYS
            and self._reflected_record(record)
        )

    def _reflected_record(self, expr: ast.expr, depth: int = 0) -> bool:
        """One dict an Inspector method returned (a column, an index, a foreign key)."""
        if depth > 4:
            return False
        if isinstance(expr, ast.Call):
            func = expr.func
            return (
                isinstance(func, ast.Attribute)
                and func.attr in _REFLECTED_RECORD
                and self.inspector(func.value)
            )
        if isinstance(expr, ast.Subscript):
            return self._reflected_records(expr.value)
        if isinstance(expr, ast.Name):
            bindings = [
                b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION
            ]
            if len(bindings) == 1 and self._column_reflect_info(bindings[0]):
                return True
            return bool(bindings) and all(
                b.value is not None
                and (
                    (b.kind is BindingKind.LOOP and self._reflected_element(b.value, b.path))
                    or (
                        b.kind is BindingKind.ASSIGN
                        and not b.path
                        and self._reflected_record(b.value, depth + 1)
                    )
                )
                for b in bindings
            )
        return False

    def _column_reflect_info(self, binding: Binding) -> bool:
        """``column_info`` of a ``column_reflect`` listener, ``(inspector, table,
        column_info)``: the dict reflection read from the catalogue for one column."""
        if binding.kind is not BindingKind.PARAMETER or binding.name != "column_info":
            return False
        arguments = self.flow.ctx.parent(binding.node)
        if not isinstance(arguments, ast.arguments):
            return False
        names = [a.arg for a in (*arguments.posonlyargs, *arguments.args)]
        at = names.index("column_info") if "column_info" in names else -1
        return (
            at >= 2
            and names[at - 1] == "table"
            and _INSPECTOR_WORD.match(names[at - 2]) is not None
        )

    def _reflected_element(self, iterable: ast.expr, path: tuple[int, ...]) -> bool:
        if not path:
            return self._reflected_records(iterable)
        if path == (1,) and isinstance(iterable, ast.Call) and iterable.args:
            func = iterable.func
            builtin = isinstance(func, ast.Name) and not self.flow.bindings(func)
            if builtin and isinstance(func, ast.Name) and func.id == "enumerate":
                return self._reflected_records(iterable.args[0])
        return False

    def _reflected_records(self, expr: ast.expr) -> bool:
        """A list of dicts an Inspector method returned (``insp.get_indexes(table)``)."""
        if isinstance(expr, ast.Name):
            bindings = [
                b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION
            ]
            return bool(bindings) and all(
                b.kind is BindingKind.ASSIGN
                and not b.path
                and b.value is not None
                and not isinstance(b.value, ast.Name)
                and self._reflected_records(b.value)
                for b in bindings
            )
        if not isinstance(expr, ast.Call):
            return False
        func = expr.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in _REFLECTED_RECORD_LISTS
            and self.inspector(func.value)
        )

    def inspector(self, expr: ast.expr) -> bool:
        """An Inspector: ``inspect(engine)``, ``Inspector.from_engine(...)``, a name bound
        to one, or a parameter annotated ``Inspector`` or named ``inspector``/``insp``."""
        names = self.flow.ctx.names
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Attribute) and func.attr == "from_engine":
                return names.sqla_name(func.value) == "Inspector"
            return names.sqla_name(func) == "inspect"
        if not isinstance(expr, ast.Name):
            return False
        bindings = [b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION]
        if not bindings:
            return False
        for binding in bindings:
            if binding.kind is BindingKind.PARAMETER:
                annotation = binding.annotation
                if annotation is None or last_name(annotation) == "Any":
                    if not _INSPECTOR_WORD.match(expr.id):
                        return False
                elif last_name(annotation) != "Inspector":
                    return False
            elif binding.kind is BindingKind.ASSIGN and not binding.path:
                value = binding.value
                if not isinstance(value, ast.Call) or not self.inspector(value):
                    return False
            else:
                return False
        return True

    # Schema objects ----------------------------------------------------------------
    def schema_identifier(self, expr: ast.Attribute) -> bool:
        """``column.name``, ``table.fullname``, ``c.key``: a name the schema declares;
        ``inspector.default_schema_name``: one the database catalogue holds.

        Tables, columns and mappers are built by the project's own code, so their names
        are identifiers the code chose, not a request's value.
        """
        if expr.attr == "default_schema_name":
            return self.inspector(expr.value)  # the catalogue's own name for it
        return expr.attr in _SCHEMA_IDENTIFIERS and self.schema_object(expr.value)

    def schema_object(self, expr: ast.expr, depth: int = 0) -> bool:
        """Whether ``expr`` is a SQLAlchemy Table, Column or Mapper (or a collection of them).

        Known by how it is reached (``Model.__table__``, ``table.c[key]``,
        ``inspect(Model).columns``, a loop over ``mapper.columns``), by a parameter's
        annotation (``Column``, ``Sequence[Table]``), or, when nothing says otherwise, by
        the name SQLAlchemy code gives such objects (``column``, ``table``, ``mapper``).
        """
        if depth > 8:
            return False
        if isinstance(expr, ast.Attribute):
            attr = expr.attr
            inner = expr.value
            if attr in _SCHEMA_DUNDERS or attr in _SCHEMA_ROOTS:
                return True
            if _schema_word(attr) and isinstance(inner, ast.Name) and inner.id in ("self", "cls"):
                # `self.table`: what a class of SQLAlchemy code keeps under that name.
                return True
            if isinstance(inner, ast.Attribute) and inner.attr in ("c", "columns"):
                # `table.c.user_id`: a column of a table's column collection.
                return self.schema_object(inner, depth + 1)
            return attr in _SCHEMA_MEMBERS and self.schema_object(inner, depth + 1)
        if isinstance(expr, ast.Subscript):
            return self.schema_object(expr.value, depth + 1)
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Attribute) and func.attr in ("values", "get"):
                return self.schema_object(func.value, depth + 1)
            name = self.flow.ctx.names.sqla_name(func)
            return name in _SCHEMA_FUNCTIONS
        if isinstance(expr, ast.Name):
            bindings = [
                b for b in self.flow.bindings(expr) if b.kind is not BindingKind.ANNOTATION
            ]
            if not bindings:
                return _schema_word(expr.id)
            return all(self._schema_binding(b, expr.id, depth) for b in bindings)
        return False

    def _schema_binding(self, binding: Binding, name: str, depth: int) -> bool:
        kind = binding.kind
        value = binding.value
        if kind is BindingKind.PARAMETER:
            annotation = binding.annotation
            if annotation is None or last_name(annotation) == "Any":
                return _schema_word(name)
            return self._schema_annotation(annotation)
        if kind is BindingKind.ASSIGN and value is not None and not binding.path:
            return _schema_word(name) or self.schema_object(value, depth + 1)
        if kind is BindingKind.LOOP and value is not None:
            return self._schema_element(value, binding.path, depth)
        return _schema_word(name)

    def _schema_element(self, iterable: ast.expr, path: tuple[int, ...], depth: int) -> bool:
        """Whether one element of ``iterable`` (the part at ``path``) is a schema object."""
        if not path:
            return self.schema_object(iterable, depth + 1)
        if path != (1,) or not isinstance(iterable, ast.Call):
            return False
        func = iterable.func
        if isinstance(func, ast.Attribute) and func.attr == "items" and not iterable.args:
            return self.schema_object(func.value, depth + 1)
        builtin = isinstance(func, ast.Name) and not self.flow.bindings(func)
        if builtin and isinstance(func, ast.Name) and func.id == "enumerate" and iterable.args:
            return self.schema_object(iterable.args[0], depth + 1)
        return False

    def _schema_annotation(self, annotation: ast.expr) -> bool:
        names = self.flow.ctx.names
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                annotation = ast.parse(annotation.value, mode="eval").body
            except SyntaxError:
                return False
        return any(
            isinstance(node, (ast.Name, ast.Attribute))
            and names.sqla_name(node) in _SCHEMA_CLASSES
            for node in ast.walk(annotation)
        )

    # Prefixes ----------------------------------------------------------------------
    def prefixes(self, expr: ast.expr, depth: int = 0) -> list[StringPrefix]:
        """The literal text each value ``expr`` may take starts with (URLs' schemes).

        A value read from the environment or from settings has no prefix: it is whatever
        the deployment says, and rules should stay silent about it.
        """
        if depth > 12:
            return []
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [StringPrefix(expr.value, expr, complete=True)]
        if isinstance(expr, ast.JoinedStr):
            text = ""
            for piece in expr.values:
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    text += piece.value
                    continue
                # `f"{DB._DIALECT}:///{path}"`: a class constant's text is the code's.
                inner = (
                    self.prefixes(piece.value, depth + 1)
                    if isinstance(piece, ast.FormattedValue)
                    and piece.format_spec is None
                    and piece.conversion in (-1, ord("s"))
                    else []
                )
                if len(inner) != 1 or not inner[0].complete:
                    break
                text += inner[0].text
            return [StringPrefix(text, expr, complete=False)] if text else []
        if isinstance(expr, ast.Attribute):
            return self._attribute_prefixes(expr, depth)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Mod)):
            left = self.prefixes(expr.left, depth + 1)
            if isinstance(expr.op, ast.Mod):
                return [StringPrefix(p.text.split("%", 1)[0], p.node, False) for p in left]
            return [StringPrefix(p.text, p.node, False) for p in left]
        if isinstance(expr, ast.Call):
            return self._call_prefixes(expr, depth)
        if isinstance(expr, ast.Name):
            found: list[StringPrefix] = []
            for binding in self.flow.bindings(expr):
                plain = binding.kind is BindingKind.ASSIGN and not binding.path
                if plain and binding.value is not None:
                    found.extend(self.prefixes(binding.value, depth + 1))
            return found
        if isinstance(expr, ast.IfExp):
            return self.prefixes(expr.body, depth + 1) + self.prefixes(expr.orelse, depth + 1)
        return []

    def _attribute_prefixes(self, expr: ast.Attribute, depth: int) -> list[StringPrefix]:
        """``DB._DIALECT`` or ``self.DB_NAME``, a class constant: its literal. ``self.url``
        in a method: what the class's methods assign to it (``self.url =
        self.get_url(path)`` in ``__init__``), when nothing else in the module does."""
        if self.class_constant(expr):
            around = _method_around(self.flow.ctx, expr)
            literal = _class_string(around[1], expr.attr) if around is not None else None
            return [StringPrefix(literal, expr, complete=True)] if literal is not None else []
        owner = expr.value
        around = _method_around(self.flow.ctx, expr)
        if not isinstance(owner, ast.Name) or around is None:
            return []
        function, cls = around
        params = [*function.args.posonlyargs, *function.args.args]
        if not params or params[0].arg != owner.id or function.decorator_list:
            return []
        key = (id(cls), expr.attr)
        if key in self._attribute_urls:
            return self._attribute_urls[key] or []  # None: `self.url = self.url + ...`
        self._attribute_urls[key] = None
        found = self._assigned_prefixes(cls, expr.attr, depth)
        self._attribute_urls[key] = found
        return found

    def _assigned_prefixes(self, cls: ast.ClassDef, attr: str, depth: int) -> list[StringPrefix]:
        values: list[ast.expr] = []
        stored = 0
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef) or method.decorator_list:
                continue
            receiver = [*method.args.posonlyargs, *method.args.args][:1]
            for node in ast.walk(method):
                if (
                    isinstance(node, ast.Assign)
                    and len(node.targets) == 1
                    and isinstance(target := node.targets[0], ast.Attribute)
                    and target.attr == attr
                    and isinstance(target.value, ast.Name)
                    and receiver
                    and target.value.id == receiver[0].arg
                ):
                    values.append(node.value)
        for node in ast.walk(self.flow.ctx.tree):
            if (
                not isinstance(node, ast.Attribute)
                or node.attr != attr
                or not isinstance(node.ctx, (ast.Store, ast.Del))
            ):
                continue
            place = _method_around(self.flow.ctx, node)
            if place is not None and place[1] is not cls:
                first = [*place[0].args.posonlyargs, *place[0].args.args][:1]
                if first and isinstance(node.value, ast.Name) and node.value.id == first[0].arg:
                    continue  # another class's own attribute of that name
            stored += 1
        if not values or stored != len(values):
            return []  # assigned elsewhere too, or by unpacking: not only these values
        found: list[StringPrefix] = []
        for value in values:
            found.extend(self.prefixes(value, depth + 1))
        return found

    def _call_prefixes(self, call: ast.Call, depth: int) -> list[StringPrefix]:
        func = call.func
        method = self.own_method(func, static=True)
        if method is not None:
            # `self.get_db_url(path)`: what the method returns starts as its text does.
            return [p for r in _returned(method) for p in self.prefixes(r, depth + 1)]
        if isinstance(func, ast.Attribute):
            if func.attr == "format":
                return [
                    StringPrefix(p.text.split("{", 1)[0], p.node, False)
                    for p in self.prefixes(func.value, depth + 1)
                ]
            if func.attr == "replace" and len(call.args) >= 2:
                new = call.args[1]
                text = new.value if isinstance(new, ast.Constant) else None
                if isinstance(text, str) and "://" in text:
                    return [StringPrefix(text, new, False)]
                return self.prefixes(func.value, depth + 1)
            if func.attr in ("strip", "rstrip", "lstrip", "render_as_string"):
                return self.prefixes(func.value, depth + 1)
            if func.attr in ("set", "create") and (driver := call_keyword(call, "drivername")):
                value = driver.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return [StringPrefix(value.value + "://", value, False)]
                return []
            if func.attr == "create" and call.args:
                first = call.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    return [StringPrefix(first.value + "://", first, False)]
                return []
            if func.attr == "set":
                return self.prefixes(func.value, depth + 1)
        if isinstance(func, ast.Name) and func.id in ("str", "make_url") and call.args:
            return self.prefixes(call.args[0], depth + 1)
        if isinstance(func, ast.Attribute) and func.attr == "make_url" and call.args:
            return self.prefixes(call.args[0], depth + 1)
        return []


@dataclass(frozen=True)
class StringPrefix:
    """Literal text a string starts with, and the literal node it is written in."""

    text: str
    node: ast.expr
    complete: bool = False  # the whole string, not only its start


# What a schema object says of its own name.
_SCHEMA_IDENTIFIERS = frozenset({"name", "key", "fullname", "schema", "__tablename__"})
# Attributes that are schema objects whatever they are read from.
_SCHEMA_DUNDERS = frozenset({"__table__", "__mapper__"})
# `Base.metadata`, `table.c`: the roots and column collections SQLAlchemy names so.
_SCHEMA_ROOTS = frozenset({"metadata", "c", "sorted_tables"})
# Attributes of a schema object that are schema objects (or collections of them).
_SCHEMA_MEMBERS = frozenset(
    {
        "columns", "primary_key", "foreign_keys", "constraints", "indexes", "column_attrs",
        "attrs", "relationships", "tables", "local_table", "persist_selectable", "mapper",
        "exported_columns", "selected_columns", "parent", "referred_table", "elements",
        "table", "column",
    }
)
_SCHEMA_FUNCTIONS = frozenset(
    {"inspect", "class_mapper", "object_mapper", "Table", "Column", "table", "column"}
)
_SCHEMA_CLASSES = frozenset(
    {
        "Column", "Table", "TableClause", "ColumnClause", "ColumnElement", "KeyedColumnElement",
        "NamedColumn", "FromClause", "Alias", "Subquery", "Mapper", "ColumnProperty",
        "MapperProperty", "RelationshipProperty", "Relationship", "InstrumentedAttribute",
        "QueryableAttribute", "MetaData", "Index", "Constraint", "ForeignKey",
        "ForeignKeyConstraint", "PrimaryKeyConstraint", "UniqueConstraint", "CheckConstraint",
        "Sequence", "MappedColumn", "ColumnCollection",
    }
)
# Inspector methods (`inspect(engine).get_table_names()`) and the parts of what they
# return that are names read from the database catalogue: identifiers the database
# already holds, not text a request chose.
_REFLECTED_NAME_LISTS = frozenset(
    {
        "get_table_names", "get_view_names", "get_schema_names", "get_sequence_names",
        "get_materialized_view_names", "get_temp_table_names", "get_temp_view_names",
    }
)
_REFLECTED_RECORD_LISTS = frozenset(
    {
        "get_columns", "get_indexes", "get_foreign_keys", "get_unique_constraints",
        "get_check_constraints",
    }
)
_REFLECTED_RECORD = frozenset({"get_pk_constraint"})
_REFLECTED_KEYS = frozenset(
    {
        "name", "column_names", "constrained_columns", "referred_schema", "referred_table",
        "referred_columns",
    }
)
_INSPECTOR_WORD = re.compile(r"^_?(?:[a-z0-9_]*_)?(?:inspector|insp)$")
_SCHEMA_WORD = re.compile(r"^_?(?:[a-z0-9_]*_)?(?:column|col|table|tbl|mapper)$")


def _schema_word(name: str) -> bool:
    """``column``, ``table``, ``tsvector_column``: what SQLAlchemy code names such objects."""
    return bool(_SCHEMA_WORD.match(name))


# SQLAlchemy's text() takes `:name` as a bind parameter where no word character, colon
# or backslash comes before the colon (`a::int` is a cast, `\:x` an escaped colon).
_BIND_MARKER = re.compile(r"[^\w:\\]:$")


def _ends_with_bind_marker(node: ast.expr | None, starts: bool = True) -> bool:
    """Literal text ending in a bind parameter's colon (``"... = :"``, ``f"{a} = :"``).

    ``starts``: nothing comes before ``node`` in the string, so a lone ``":"`` opens it.
    """
    if isinstance(node, ast.JoinedStr):
        starts = len(node.values) == 1
        node = node.values[-1] if node.values else None
    if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
        return False
    text = node.value
    return bool(_BIND_MARKER.search(text)) or (starts and text == ":")


# Literal text after which SQL wants a name: a table, a column list, a qualified name,
# SQLite's pragma and the table a pragma function reads (`PRAGMA table_info(users)`).
_IDENTIFIER_BEFORE = re.compile(
    r"(?:\b(?:FROM|JOIN|INTO|UPDATE|TABLE|TRUNCATE|INDEX|VIEW|SEQUENCE|SCHEMA|EXISTS|CONCURRENTLY|"
    r"SELECT|DISTINCT|ORDER\s+BY|GROUP\s+BY|RENAME\s+TO|COLUMN|ANALYZE|SET|PRAGMA|"
    r"VACUUM(?:\s+(?:FULL|FREEZE|VERBOSE|ANALYZE))*)\s+[\"`\[]?"
    r"|\bPRAGMA\s+(?:\w+\.)?\w+\s*\(\s*[\"`\[]?"
    r"|(?:^|[\w\"])\.\"?)$",
    re.IGNORECASE,
)
# Literal text that follows a qualifier: `{schema}.table`, `{table}.id`.
_IDENTIFIER_AFTER = re.compile(r'^"?\.[A-Za-z_"]')


# `stmt.compile()`, `compile_query()`, `_compile_statement()`.
_COMPILING = re.compile(r"^_?compile(?:_\w+)?$")
_FILLING = ("append", "extend", "insert", "add", "update", "setdefault")


def _unpacked(rows: list[ast.expr], path: tuple[int, ...]) -> list[ast.expr] | None:
    """The part at ``path`` of each literal row (``(1,)``: the second of each tuple)."""
    for head in path:
        parts: list[ast.expr] = []
        for row in rows:
            if not isinstance(row, (ast.Tuple, ast.List)) or head >= len(row.elts):
                return None
            parts.append(row.elts[head])
        rows = parts
    return rows


def _literal_text(node: ast.expr | None, last: bool) -> str | None:
    """The literal text at the end (``last``) or start of a string expression."""
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        node = node.right if last else node.left
    if isinstance(node, ast.JoinedStr):
        pieces = node.values
        node = (pieces[-1] if last else pieces[0]) if pieces else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _class_string(cls: ast.ClassDef, attr: str) -> str | None:
    """The literal string the class body assigns to ``attr`` (``_DIALECT = "sqlite"``)."""
    for stmt in cls.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        )
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
        if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            return None
    return None


def _method_around(
    ctx: FileContext, node: ast.AST
) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.ClassDef] | None:
    """The function ``node`` is in and the class whose body defines it; None when it is in
    no function, a lambda or class comes first, or the function is not a class's."""
    function: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for ancestor in ctx.ancestors(node):
        if function is None:
            if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = ancestor
            elif isinstance(ancestor, (ast.Lambda, ast.ClassDef)):
                return None
            continue
        return (function, ancestor) if isinstance(ancestor, ast.ClassDef) else None
    return None


def _before_identifier(node: ast.expr | None) -> bool:
    """Literal text ending where a table or column name goes (``"SELECT * FROM "``)."""
    text = _literal_text(node, last=True)
    return text is not None and bool(_IDENTIFIER_BEFORE.search(text))


def _after_identifier(node: ast.expr | None) -> bool:
    text = _literal_text(node, last=False)
    return text is not None and bool(_IDENTIFIER_AFTER.match(text))


def _as_identifier(node: ast.expr, value: StringValue, how: str, at: ast.AST) -> StringValue:
    """``value`` spliced in as a table or column name."""
    return _spliced_as(node, value, how, at, identifier=True)


def _as_placeholder(
    node: ast.expr, value: StringValue, how: str, at: ast.AST
) -> StringValue:
    """``value`` spliced in as a bind parameter's name."""
    return _spliced_as(node, value, how, at, placeholder=True)


def _spliced_as(
    node: ast.expr,
    value: StringValue,
    how: str,
    at: ast.AST,
    *,
    placeholder: bool = False,
    identifier: bool = False,
) -> StringValue:
    """``value``'s interpolations, marked as a bind parameter's name or an identifier."""
    if value.state is ValueState.DYNAMIC:
        found = tuple(
            replace(
                i, placeholder=i.placeholder or placeholder, identifier=i.identifier or identifier
            )
            for i in value.interpolations
        )
    elif value.state is ValueState.OPAQUE:
        found = (Interpolation(node, how, at, placeholder=placeholder, identifier=identifier),)
    else:
        return value
    return StringValue(ValueState.DYNAMIC, True, found)


# A `%` conversion: an optional `(key)`, flags, width, precision, length, the type.
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?[hlL]?"
    r"(?P<conv>[diouxXeEfFgGcrsa%])"
)


def _percent_operands(
    left: ast.expr,
    right: ast.expr,
    operands: list[ast.expr],
    wanted: Callable[[str, re.Match[str]], bool],
) -> set[int]:
    """The ``id()`` of the operands of ``"..." % operands`` whose every placeholder is
    ``wanted(template, spec)``. Empty when the format is not a literal or its
    placeholders do not line up with the operands (``%*d`` takes two)."""
    if not isinstance(left, ast.Constant) or not isinstance(left.value, str):
        return set()
    template = left.value
    specs = [m for m in _PERCENT_SPEC.finditer(template) if m.group("conv") != "%"]
    if any(m.group("width") == "*" or m.group("prec") == "*" for m in specs):
        return set()
    if isinstance(right, ast.Dict):
        by_key: dict[str, bool] = {}
        for m in specs:
            key = m.group("key")
            if key is None:
                return set()
            by_key[key] = by_key.get(key, True) and wanted(template, m)
        return {
            id(value)
            for key, value in zip(right.keys, right.values, strict=True)
            if isinstance(key, ast.Constant) and by_key.get(str(key.value)) is True
        }
    if any(m.group("key") is not None for m in specs) or len(specs) != len(operands):
        return set()
    return {
        id(operand)
        for operand, m in zip(operands, specs, strict=True)
        if wanted(template, m)
    }


def _numeric_placeholder(template: str, spec: re.Match[str]) -> bool:
    """``%d``, ``%5.2f``, ``%(n)i``: anything but a number raises TypeError there, so the
    value cannot carry SQL."""
    return spec.group("conv") in "diouxXeEfFgG"


def _name_placeholder(template: str, spec: re.Match[str]) -> bool:
    return _wants_name(template, spec.span())


def _wants_name(template: str, span: tuple[int, int]) -> bool:
    """Whether SQL wants a table or column name at ``template[start:end]``
    (``SELECT * FROM %s``, ``FROM "{}"``)."""
    start, end = span
    if in_sql_string(template[:start]):
        return False
    return bool(_IDENTIFIER_BEFORE.search(template[:start])) or bool(
        _IDENTIFIER_AFTER.match(template[end:])
    )


def in_sql_string(before: str) -> bool:
    """Whether the literal text ``before`` leaves a single-quoted SQL string open
    (``"... = '"``): what comes next is inside a string literal, a value, even where a
    dot follows it (``'{region}.lms.org.'``). A doubled quote (``''``) is the escape and
    keeps the count even."""
    return before.count("'") % 2 == 1



def _format_identifiers(template: ast.expr, call: ast.Call) -> set[int]:
    """The ``id()`` of the arguments of ``"...".format(...)`` spliced in where SQL wants a
    table or column name (``'SELECT * FROM "{}"'.format(view)``)."""
    if not isinstance(template, ast.Constant) or not isinstance(template.value, str):
        return set()
    text = template.value
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    found: set[int] = set()
    automatic = 0
    for match in _FORMAT_FIELD.finditer(text):
        field = match.group("field")
        if field is None:
            continue  # `{{` or `}}`
        key = re.split(r"[.\[!:]", field, maxsplit=1)[0]
        if key == "":
            key, automatic = str(automatic), automatic + 1
        if key.isdigit():
            argument = call.args[int(key)] if int(key) < len(call.args) else None
        else:
            argument = keywords.get(key)
        if argument is None or isinstance(argument, ast.Starred):
            continue
        if _wants_name(text, match.span()):
            found.add(id(argument))
    return found


# A replacement field of str.format() (nested fields inside one are not followed).
_FORMAT_FIELD = re.compile(r"\{\{|\}\}|\{(?P<field>[^{}]*)\}")


def template_slots(expr: ast.expr) -> list[tuple[ast.expr, str]]:
    """Each value an f-string or a literal template's ``.format()`` splices in, with the
    template's literal text before it (``f"... RESTART WITH {n}"`` gives ``(n, "...
    RESTART WITH ")``); [] for any other expression, and a value whose field cannot be
    matched to an argument is left out."""
    if isinstance(expr, ast.JoinedStr):
        slots: list[tuple[ast.expr, str]] = []
        before = ""
        for part in expr.values:
            if isinstance(part, ast.Constant):
                before += str(part.value)
            elif isinstance(part, ast.FormattedValue):
                slots.append((part.value, before))
                before += "\x00"  # the value's text: no quote, no keyword
        return slots
    if not (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr == "format"
        and isinstance(expr.func.value, ast.Constant)
        and isinstance(expr.func.value.value, str)
    ):
        return []
    text = expr.func.value.value
    keywords = {k.arg: k.value for k in expr.keywords if k.arg is not None}
    found: list[tuple[ast.expr, str]] = []
    automatic = 0
    for match in _FORMAT_FIELD.finditer(text):
        field = match.group("field")
        if field is None:
            continue
        key = re.split(r"[.\[!:]", field, maxsplit=1)[0]
        if key == "":
            key, automatic = str(automatic), automatic + 1
        if key.isdigit():
            argument = expr.args[int(key)] if int(key) < len(expr.args) else None
        else:
            argument = keywords.get(key)
        if argument is not None and not isinstance(argument, ast.Starred):
            found.append((argument, _FORMAT_FIELD.sub("\x00", text[: match.start()])))
    return found



def _numeric_format(spec: ast.JoinedStr) -> bool:
    text = "".join(
        str(p.value) for p in spec.values if isinstance(p, ast.Constant)
    )
    return bool(_NUMERIC_SPEC.match(text)) and not any(
        isinstance(p, ast.FormattedValue) for p in spec.values
    )


def _constant_attribute(expr: ast.Attribute) -> bool:
    """``settings.SCHEMA``, ``User.__tablename__``, ``Sort.ASC.value``: fixed by the code."""
    if is_constant_name(expr.attr) or expr.attr == "__tablename__":
        return True
    inner = expr.value
    if (
        expr.attr in ("name", "fullname", "schema")
        and isinstance(inner, ast.Attribute)
        and inner.attr == "__table__"
    ):
        return True
    if expr.attr in ("value", "name") and isinstance(inner, ast.Attribute):
        return is_constant_name(inner.attr)
    return False


def _literal_strings(annotation: ast.expr) -> bool:
    """``Literal["asc", "desc"]``: a parameter that can only be one of fixed strings."""
    if not isinstance(annotation, ast.Subscript):
        return False
    head = annotation.value
    name = last_name(head)
    if name != "Literal":
        return False
    items = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
    return all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items)
