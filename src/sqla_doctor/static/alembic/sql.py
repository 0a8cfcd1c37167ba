"""Just enough of PostgreSQL's SQL to classify the statements migrations run by hand.

Not regular expressions over raw text: a lexer drops comments, string literals and
dollar-quoted bodies first (so ``IS NOT NULL`` inside a trigger body or a string is never
read as DDL), statements are split on top-level semicolons, and each statement is read
token by token in the grammar's order. What is not understood is reported as ``UNKNOWN``
so that rules stay silent about it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

# A Python expression interpolated into SQL (f-string, .format, %): an unknown name.
PLACEHOLDER = "__sqd_expr__"

_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_NUMBER = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "ident" (quoted identifier), "string", "number", "punct"
    value: str  # upper-cased for words, verbatim otherwise

    @property
    def name(self) -> str:
        """The identifier this token spells (unquoted names fold to lower case)."""
        return self.value.lower() if self.kind == "word" else self.value


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch == "'" or (ch in "eEbBxXnN" and sql.startswith("'", i + 1)):
            backslash = ch in "eE"
            i = i + 1 if ch == "'" else i + 2
            while i < n:
                if backslash and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if sql.startswith("''", i):
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
            tokens.append(Token("string", "'"))
        elif ch == '"':
            end = i + 1
            parts: list[str] = []
            while end < n:
                if sql[end] == '"':
                    if sql.startswith('""', end):
                        parts.append('"')
                        end += 2
                        continue
                    break
                parts.append(sql[end])
                end += 1
            tokens.append(Token("ident", "".join(parts)))
            i = end + 1
        elif ch == "$":
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                close = sql.find(tag.group(0), tag.end())
                i = n if close < 0 else close + len(tag.group(0))
                tokens.append(Token("string", "$"))
            else:
                # $1 positional parameter
                match = _NUMBER.match(sql, i + 1)
                i = match.end() if match else i + 1
                tokens.append(Token("word", PLACEHOLDER.upper()))
        elif ch.isdigit():
            match = _NUMBER.match(sql, i)
            assert match is not None
            tokens.append(Token("number", match.group(0)))
            i = match.end()
        else:
            word = _WORD.match(sql, i)
            if word:
                tokens.append(Token("word", word.group(0).upper()))
                i = word.end()
            else:
                tokens.append(Token("punct", ch))
                i += 1
    return tokens


@dataclass(frozen=True)
class Statement:
    tokens: tuple[Token, ...]

    def words(self) -> list[str]:
        return [t.value if t.kind == "word" else "" for t in self.tokens]


def split_statements(sql: str) -> list[Statement]:
    statements: list[Statement] = []
    current: list[Token] = []
    depth = 0
    for token in tokenize(sql):
        if token.kind == "punct" and token.value == "(":
            depth += 1
        elif token.kind == "punct" and token.value == ")":
            depth = max(depth - 1, 0)
        if token.kind == "punct" and token.value == ";" and depth == 0:
            if current:
                statements.append(Statement(tuple(current)))
            current = []
            continue
        current.append(token)
    if current:
        statements.append(Statement(tuple(current)))
    return statements


@dataclass(frozen=True)
class SqlAction:
    """One thing a statement does, in the vocabulary the migration rules share."""

    kind: str
    table: str | None = None
    column: str | None = None
    new_name: str | None = None
    name: str | None = None
    concurrently: bool = False
    not_null: bool = False
    has_default: bool = False
    references: bool = False
    primary_key: bool = False
    constraint: str | None = None  # foreign_key, check, unique, primary_key, exclude
    not_valid: bool = False
    using_index: bool = False
    type_text: str | None = None
    # `ALTER COLUMN c TYPE t USING ...`: "" for any expression, the type when it only
    # casts the column (`USING c::numeric(11,2)`, `USING CAST(c AS int)`).
    using: str | None = None
    verb: str | None = None
    what: str | None = None
    extra: tuple[str, ...] = field(default=())
    # The schema `ALTER TABLE categories.settings ...` names the table in.
    schema: str | None = None


class _Reader:
    """A cursor over one statement's tokens."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = list(tokens)
        self.pos = 0
        # What qualified the last name read (`categories` of `categories.settings`).
        self.qualifier: str | None = None

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def at(self, *words: str) -> bool:
        for offset, word in enumerate(words):
            token = self.peek(offset)
            if token is None or token.kind != "word" or token.value != word:
                return False
        return True

    def accept(self, *words: str) -> bool:
        if self.at(*words):
            self.pos += len(words)
            return True
        return False

    def done(self) -> bool:
        return self.pos >= len(self.tokens)

    def name(self) -> str | None:
        """A possibly schema-qualified name; returns its last part."""
        token = self.peek()
        if token is None or token.kind not in ("word", "ident"):
            return None
        self.pos += 1
        last = token.name
        self.qualifier = None
        while self.peek() is not None and self.peek() == Token("punct", "."):
            following = self.peek(1)
            if following is None or following.kind not in ("word", "ident"):
                break
            self.pos += 2
            self.qualifier, last = last, following.name
        # `{prefix}users` is a name the migration computes: not one to report.
        return None if PLACEHOLDER in last else last

    def skip_group(self) -> None:
        """Skip a parenthesised group starting at the cursor."""
        if self.peek() != Token("punct", "("):
            return
        depth = 0
        while not self.done():
            token = self.tokens[self.pos]
            self.pos += 1
            if token == Token("punct", "("):
                depth += 1
            elif token == Token("punct", ")"):
                depth -= 1
                if depth == 0:
                    return

    def rest_split_on_commas(self) -> list[list[Token]]:
        """The remaining tokens, split on top-level commas."""
        parts: list[list[Token]] = [[]]
        depth = 0
        for token in self.tokens[self.pos :]:
            if token == Token("punct", "("):
                depth += 1
            elif token == Token("punct", ")"):
                depth -= 1
            if token == Token("punct", ",") and depth == 0:
                parts.append([])
                continue
            parts[-1].append(token)
        self.pos = len(self.tokens)
        return [part for part in parts if part]


def _contains(tokens: Sequence[Token], *words: str) -> bool:
    values = [t.value if t.kind == "word" else None for t in tokens]
    width = len(words)
    return any(tuple(values[i : i + width]) == words for i in range(len(values) - width + 1))


def _top_level(tokens: Sequence[Token]) -> list[Token]:
    """Tokens outside parentheses (so a CHECK's body does not count as the column's)."""
    result: list[Token] = []
    depth = 0
    for token in tokens:
        if token == Token("punct", "("):
            depth += 1
            continue
        if token == Token("punct", ")"):
            depth -= 1
            continue
        if depth == 0:
            result.append(token)
    return result


_CONSTRAINT_WORDS = {
    "FOREIGN": "foreign_key",
    "CHECK": "check",
    "UNIQUE": "unique",
    "PRIMARY": "primary_key",
    "EXCLUDE": "exclude",
}
# Statements PostgreSQL refuses inside a transaction block.
_NO_TRANSACTION = (
    (("VACUUM",), "VACUUM"),
    (("CREATE", "DATABASE"), "CREATE DATABASE"),
    (("DROP", "DATABASE"), "DROP DATABASE"),
    (("CREATE", "TABLESPACE"), "CREATE TABLESPACE"),
    (("DROP", "TABLESPACE"), "DROP TABLESPACE"),
    (("ALTER", "SYSTEM"), "ALTER SYSTEM"),
    (("CREATE", "SUBSCRIPTION"), "CREATE SUBSCRIPTION"),
    (("DROP", "SUBSCRIPTION"), "DROP SUBSCRIPTION"),
)


def classify(sql: str) -> list[SqlAction]:
    """The actions of every statement in ``sql``, in order."""
    actions: list[SqlAction] = []
    for statement in split_statements(sql):
        actions.extend(_classify(statement))
    return actions


def _classify(statement: Statement) -> Iterator[SqlAction]:
    reader = _Reader(statement.tokens)
    for words, what in _NO_TRANSACTION:
        if reader.at(*words):
            yield SqlAction("no_transaction", what=what)
            return
    if reader.accept("CREATE"):
        yield from _create(reader)
    elif reader.accept("DROP"):
        yield from _drop(reader)
    elif reader.accept("ALTER", "TABLE"):
        yield from _alter_table(reader)
    elif reader.accept("REINDEX"):
        concurrently = _contains(statement.tokens, "CONCURRENTLY")
        yield SqlAction("reindex", concurrently=concurrently)
    elif (
        reader.at("UPDATE")
        or reader.at("DELETE")
        or reader.at("INSERT")
        or reader.at("MERGE")
        or reader.at("COPY")
        or reader.at("TRUNCATE")
    ):
        yield _dml(reader)
    elif reader.at("WITH"):
        yield from _with(reader)
    else:
        first = statement.tokens[0].value if statement.tokens else ""
        if first in ("SELECT", "SET", "RESET", "SHOW", "ANALYZE", "LOCK"):
            yield SqlAction("query", verb=first)
        elif first in ("COMMIT", "BEGIN", "END", "START", "ROLLBACK"):
            yield SqlAction("transaction", verb=first)
        elif first in ("ALTER", "COMMENT", "GRANT", "REVOKE"):
            yield SqlAction("ddl_other", verb=first)
        else:
            yield SqlAction("unknown", verb=first or None)


def _create(reader: _Reader) -> Iterator[SqlAction]:
    reader.accept("OR", "REPLACE")
    unique = reader.accept("UNIQUE")
    if reader.accept("INDEX"):
        concurrently = reader.accept("CONCURRENTLY")
        reader.accept("IF", "NOT", "EXISTS")
        name = None if reader.at("ON") else reader.name()
        table = None
        if reader.accept("ON"):
            reader.accept("ONLY")
            table = reader.name()
        yield SqlAction(
            "create_index",
            table=table,
            name=name,
            concurrently=concurrently,
            extra=("unique",) if unique else (),
        )
        return
    for word in ("TEMPORARY", "TEMP", "UNLOGGED", "GLOBAL", "LOCAL"):
        reader.accept(word)
    if reader.accept("TABLE"):
        reader.accept("IF", "NOT", "EXISTS")
        yield SqlAction("create_table", table=reader.name())
        return
    yield _on_table(reader, "CREATE")


def _drop(reader: _Reader) -> Iterator[SqlAction]:
    if reader.accept("INDEX"):
        concurrently = reader.accept("CONCURRENTLY")
        reader.accept("IF", "EXISTS")
        yield SqlAction("drop_index", name=reader.name(), concurrently=concurrently)
        return
    if reader.accept("TABLE"):
        reader.accept("IF", "EXISTS")
        for part in reader.rest_split_on_commas():
            name = _Reader(part).name()
            yield SqlAction("drop_table", table=name)
        return
    yield _on_table(reader, "DROP")


def _on_table(reader: _Reader, verb: str) -> SqlAction:
    """CREATE/DROP of another object: a lock on a table only for ``... ON table`` (triggers,
    rules, policies); extensions, types, functions, views and sequences lock no table."""
    reader.accept("CONSTRAINT")
    if not (reader.at("TRIGGER") or reader.at("RULE") or reader.at("POLICY")):
        return SqlAction("ddl_minor", verb=verb)
    top = _top_level(reader.tokens[reader.pos :])
    for index, token in enumerate(top):
        if token.kind == "word" and token.value == "ON" and index + 1 < len(top):
            return SqlAction("ddl_other", table=_Reader(top[index + 1 :]).name(), verb=verb)
    return SqlAction("ddl_minor", verb=verb)


def _alter_table(reader: _Reader) -> Iterator[SqlAction]:
    reader.accept("IF", "EXISTS")
    reader.accept("ONLY")
    table = reader.name()
    if reader.accept("RENAME"):
        if reader.accept("TO"):
            yield SqlAction("rename_table", table=table, new_name=reader.name())
            return
        if reader.accept("CONSTRAINT"):
            yield SqlAction("ddl_other", table=table, verb="RENAME CONSTRAINT")
            return
        reader.accept("COLUMN")
        old = reader.name()
        reader.accept("TO")
        yield SqlAction("rename_column", table=table, column=old, new_name=reader.name())
        return
    if reader.at("SET", "SCHEMA") or reader.at("ATTACH") or reader.at("DETACH"):
        concurrently = reader.at("DETACH") and _contains(reader.tokens, "CONCURRENTLY")
        if concurrently:
            yield SqlAction("no_transaction", table=table, what="DETACH PARTITION CONCURRENTLY")
        else:
            yield SqlAction("ddl_other", table=table, verb="ALTER TABLE")
        return
    schema = reader.qualifier
    for part in reader.rest_split_on_commas():
        yield replace(_alter_action(table, _Reader(part)), schema=schema)


def _alter_action(table: str | None, reader: _Reader) -> SqlAction:
    if reader.accept("ADD"):
        if reader.accept("CONSTRAINT"):
            name = reader.name()
            return _add_constraint(table, name, reader)
        word = reader.peek()
        if word is not None and word.kind == "word" and word.value in _CONSTRAINT_WORDS:
            return _add_constraint(table, None, reader)
        reader.accept("COLUMN")
        reader.accept("IF", "NOT", "EXISTS")
        column = reader.name()
        rest = reader.tokens[reader.pos :]
        top = _top_level(rest)
        generated = _contains(top, "GENERATED")
        return SqlAction(
            "add_column",
            table=table,
            column=column,
            not_null=_contains(top, "NOT", "NULL") or _contains(top, "PRIMARY", "KEY"),
            has_default=_contains(top, "DEFAULT") or generated,
            references=_contains(top, "REFERENCES"),
            primary_key=_contains(top, "PRIMARY", "KEY"),
            type_text=" ".join(t.value for t in top[:3]),
        )
    if reader.accept("VALIDATE", "CONSTRAINT"):
        return SqlAction("validate_constraint", table=table, name=reader.name())
    if reader.accept("DROP"):
        if reader.accept("CONSTRAINT"):
            return SqlAction("ddl_other", table=table, verb="DROP CONSTRAINT")
        reader.accept("COLUMN")
        reader.accept("IF", "EXISTS")
        return SqlAction("drop_column", table=table, column=reader.name())
    if reader.accept("ALTER"):
        reader.accept("COLUMN")
        column = reader.name()
        if reader.accept("SET", "DATA", "TYPE") or reader.accept("TYPE"):
            rest = reader.tokens[reader.pos :]
            type_tokens = []
            for token in rest:
                if token.kind == "word" and token.value in ("USING", "COLLATE"):
                    break
                type_tokens.append(token.value)
            using = None
            if len(type_tokens) < len(rest) and rest[len(type_tokens)].value == "USING":
                expression = rest[len(type_tokens) + 1 :]
                collate = Token("word", "COLLATE")
                end = expression.index(collate) if collate in expression else len(expression)
                using = _cast_of(column, expression[:end])
            return SqlAction(
                "alter_type",
                table=table,
                column=column,
                type_text=" ".join(type_tokens),
                using=using,
            )
        if reader.accept("SET", "NOT", "NULL"):
            return SqlAction("set_not_null", table=table, column=column)
        return SqlAction("ddl_other", table=table, column=column, verb="ALTER COLUMN")
    return SqlAction("ddl_other", table=table, verb="ALTER TABLE")


def _cast_of(column: str | None, tokens: Sequence[Token]) -> str:
    """The type a USING expression casts the column to (``c::t``, ``CAST(c AS t)``), or
    "" for any other expression."""
    colon = Token("punct", ":")
    if not tokens or column is None or tokens[3:].count(colon):
        return ""
    if (
        len(tokens) > 3
        and tokens[0].kind in ("word", "ident")
        and tokens[0].name == column
        and tokens[1] == colon
        and tokens[2] == colon
    ):
        return " ".join(t.value for t in tokens[3:])
    if (
        len(tokens) > 5
        and (tokens[0].kind, tokens[0].value) == ("word", "CAST")
        and tokens[1] == Token("punct", "(")
        and tokens[2].kind in ("word", "ident")
        and tokens[2].name == column
        and (tokens[3].kind, tokens[3].value) == ("word", "AS")
        and tokens[-1] == Token("punct", ")")
    ):
        return " ".join(t.value for t in tokens[4:-1])
    return ""


def _add_constraint(table: str | None, name: str | None, reader: _Reader) -> SqlAction:
    word = reader.peek()
    kind = _CONSTRAINT_WORDS.get(word.value, "other") if word is not None else "other"
    rest = reader.tokens[reader.pos :]
    top = _top_level(rest)
    referenced = None
    for index, token in enumerate(top):
        if token.kind == "word" and token.value == "REFERENCES":
            referenced = _Reader(top[index + 1 :]).name()
            break
    return SqlAction(
        "add_constraint",
        table=table,
        name=name,
        new_name=referenced,
        constraint=kind,
        not_valid=_contains(top, "NOT", "VALID"),
        using_index=_contains(top, "USING", "INDEX"),
    )


def _dml(reader: _Reader) -> SqlAction:
    token = reader.peek()
    verb = token.value if token is not None else "UPDATE"
    reader.pos += 1
    if verb == "UPDATE":
        reader.accept("ONLY")
    elif verb == "DELETE":
        reader.accept("FROM")
        reader.accept("ONLY")
    elif verb in ("INSERT", "MERGE"):
        reader.accept("INTO")
    elif verb == "TRUNCATE":
        reader.accept("TABLE")
        reader.accept("ONLY")
    table = reader.name()
    # `DELETE FROM t` / `TRUNCATE t` without a WHERE empties the table: what follows in the
    # same transaction finds no rows to fail on or to scan.
    rest = _top_level(reader.tokens[reader.pos :])
    emptied = verb == "TRUNCATE" or (
        verb == "DELETE" and not any(t.kind == "word" and t.value == "WHERE" for t in rest)
    )
    key = _one_row(verb, rest)
    bounded = key == "literal" or _literal_rows(verb, reader.tokens[reader.pos :])
    extra = (
        ("all_rows",) if emptied
        else ("one_row",) if bounded
        else ("bound_key",) if key == "bound"
        else ()
    )
    return SqlAction("dml", verb=verb, table=table, extra=extra)


def _literal_rows(verb: str, rest: Sequence[Token]) -> bool:
    """``INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')``: rows written out in the
    statement, no query of the table's rows (``INSERT ... SELECT``, a subquery)."""
    words = {t.value for t in rest if t.kind == "word"}
    return verb == "INSERT" and "VALUES" in words and "SELECT" not in words


def _one_row(verb: str, rest: Sequence[Token]) -> str | None:
    """``UPDATE t SET ... WHERE id = 1``: one row, by its key ("literal"); ``WHERE id =
    %s`` (``?``, ``:id``, ``%(id)s``, ``$1``): one row for each set of parameters it is
    run with ("bound")."""
    where = next((i for i, t in enumerate(rest) if t == Token("word", "WHERE")), None)
    if verb not in ("UPDATE", "DELETE") or where is None:
        return None
    tail = [t for t in rest[where + 1 :] if t != Token("punct", ";")]
    if Token("word", "OR") in tail:
        return None
    # Conditions joined by AND: one of them `id = <literal>` is enough.
    conditions: list[list[Token]] = [[]]
    for token in tail:
        if token == Token("word", "AND"):
            conditions.append([])
        else:
            conditions[-1].append(token)
    keyed = [
        c[2:]
        for c in conditions
        if len(c) >= 3
        and c[0].kind in ("word", "ident")
        and c[0].name == "id"
        and c[1] == Token("punct", "=")
    ]
    if any(len(v) == 1 and v[0].kind in ("number", "string") for v in keyed):
        return "literal"
    if any(_parameter(v) for v in keyed):
        return "bound"
    return None


def _parameter(tokens: Sequence[Token]) -> bool:
    """A bind parameter as the drivers spell one: ``%s``, ``?``, ``:id``, ``%(id)s``,
    ``$1``."""
    spelled = [(t.kind, t.value) for t in tokens]
    percent, s = ("punct", "%"), ("word", "S")
    return (
        spelled in ([percent, s], [("punct", "?")], [("word", PLACEHOLDER.upper())])
        or (len(spelled) == 2 and spelled[0] == ("punct", ":") and spelled[1][0] == "word")
        or (
            len(spelled) == 5
            and spelled[:2] == [percent, ("punct", "(")]
            and spelled[2][0] == "word"
            and spelled[3:] == [("punct", ")"), s]
        )
    )


def _with(reader: _Reader) -> Iterator[SqlAction]:
    """``WITH x AS (...) UPDATE ...``: the statement after the common table expressions."""
    depth = 0
    for index, token in enumerate(reader.tokens):
        if token == Token("punct", "("):
            depth += 1
        elif token == Token("punct", ")"):
            depth -= 1
        elif (
            depth == 0
            and token.kind == "word"
            and token.value
            in (
                "UPDATE",
                "DELETE",
                "INSERT",
                "MERGE",
            )
            and index > 0
        ):
            inner = _Reader(reader.tokens[index:])
            yield _dml(inner)
            return
    yield SqlAction("query", verb="WITH")
