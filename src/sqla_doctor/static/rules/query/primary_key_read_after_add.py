"""SQD304: a generated primary key read after `add()` and before any flush."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import (
    Binding,
    FunctionFlow,
    contains,
    flow_for,
    receiver_key,
    worth_analysing,
)
from sqla_doctor.static.index import Model
from sqla_doctor.static.rule import Invalid, Rule, Valid

_NOT_FLUSHING = frozenset({"add", "add_all", "expunge", "is_modified", "in_transaction"})
_MODELS = """
import uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]

class Token(Base):
    __tablename__ = "tokens"
    token_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS}
# Columns typed with `Annotated` aliases of another module: the key is in the alias.
_ALIAS_FILES = {
    "app/__init__.py": "",
    "app/types.py": """
        import datetime
        from typing import Annotated
        from sqlalchemy import func
        from sqlalchemy.orm import mapped_column

        intpk = Annotated[int, mapped_column(primary_key=True)]
        created_ts = Annotated[datetime.datetime, mapped_column(server_default=func.now())]
        """,
    "app/models.py": """
        from sqlalchemy.orm import DeclarativeBase, Mapped
        from .types import created_ts, intpk

        class Base(DeclarativeBase):
            pass

        class Post(Base):
            __tablename__ = "posts"
            id: Mapped[intpk]
            title: Mapped[str]
            created_at: Mapped[created_ts]
        """,
}

# Classic mapping: the key is the `Table`'s column.
_IMPERATIVE = """
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.orm import registry

accounts = Table(
    "accounts", MetaData(),
    Column("id", Integer, primary_key=True),
    Column("email", String(255)),
)

class Account:
    def __init__(self, email):
        self.email = email

registry().map_imperatively(Account, accounts)

def open_account(session, email):
    account = Account(email)
    session.add(account){flush}
    return account.id
"""


def _tests_for_none(flow: FunctionFlow, read: ast.Attribute) -> bool:
    """Whether the key is read only to test it (``if not obj.id:``, ``if obj.id is None``,
    ``while obj.id is None``): code that knows it may still be None."""
    node: ast.AST = read
    parent = flow.parent(node)
    while True:
        if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.Not):
            pass
        elif isinstance(parent, ast.Compare):
            if not all(
                isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq)) for op in parent.ops
            ) or not any(
                isinstance(c, ast.Constant) and c.value is None
                for c in (parent.left, *parent.comparators)
            ):
                return False
        elif isinstance(parent, ast.BoolOp):
            pass  # `if not a.id or force:` tests it too
        elif isinstance(parent, (ast.If, ast.While, ast.IfExp, ast.Assert)):
            return node is parent.test
        else:
            return False
        node, parent = parent, flow.parent(parent)


def _other_branch(flow: FunctionFlow, add: ast.AST, read: ast.AST) -> bool:
    """Whether ``add`` and ``read`` sit in the two branches of one ``if`` (its body and
    its ``elif``/``else``): a run that made the add never makes the read."""
    node: ast.AST | None = flow.parent(add)
    while node is not None:
        if isinstance(node, ast.If) and not contains(node.test, add):
            in_body = any(contains(stmt, add) for stmt in node.body)
            other = node.orelse if in_body else node.body
            if any(contains(stmt, read) for stmt in other):
                return True
        node = flow.parent(node)
    return False


def _filled_in_bulk(flow: FunctionFlow, name: str, binding: Binding, read: ast.Attribute) -> bool:
    """``ref.update(values)`` or ``setattr(ref, key, value)`` between the object's
    construction and the read: attributes set by name, the key maybe among them."""
    for call in flow.calls:
        if not binding.pos < _pos(call) < _pos(read) or not call.args:
            continue
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "update":
            target = func.value
        elif isinstance(func, ast.Name) and func.id == "setattr":
            target = call.args[0]
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name:
            return True
    return False


def _commits_owner_of(func: ast.Attribute, receiver: str | None) -> bool:
    """``uow.commit()`` after ``uow.books.add(book)``, ``self.db.flush()`` after
    ``self.repo.add(user)``: the object that holds the repository the object was added
    through commits or flushes, and so flushes the session behind that repository."""
    if func.attr not in ("commit", "flush") or receiver is None or "." not in receiver:
        return False
    key = receiver_key(func.value)
    return key is not None and key.split(".")[0] == receiver.split(".")[0]


def _made(binding: Binding) -> ast.Call | None:
    """The call whose result the name holds: `user = User(...)`, or its element of a
    tuple made and unpacked at once (`a, b = User(...), User(...)`)."""
    value = binding.value
    if binding.element is not None:
        if not isinstance(value, (ast.Tuple, ast.List)) or binding.element >= len(value.elts):
            return None
        if any(isinstance(e, ast.Starred) for e in value.elts):
            return None
        value = value.elts[binding.element]
    return value if isinstance(value, ast.Call) else None


def _loops_over(flow: FunctionFlow, name: str, binding: Binding) -> list[Binding | None]:
    """The loops and comprehensions that take their items from the list ``name`` holds."""
    return [
        loop
        for loops in flow.bindings.values()
        for loop in loops
        if loop.kind in ("for", "comp")
        and isinstance(loop.value, ast.Name)
        and loop.value.id == name
        and loop.element is None
        and flow.binding(name, loop.value) is binding
    ]


def _pos(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


class PrimaryKeyReadAfterAdd(Rule):
    """
    ## What it does
    Checks for an object of a mapped class that is created, `add()`ed to a session (or a
    list of them made by a comprehension and `add_all()`ed, read in a loop), and
    then has its primary key read before anything flushes the session (`flush()`,
    `commit()`, a query with autoflush, `refresh()`).

    ## Why is this bad?
    Primary keys generated by the database (autoincrement, identity, sequences) — and
    Python-side defaults such as `default=uuid.uuid4` — are only assigned when the
    INSERT is flushed. Until then `user.id` is `None`: the API returns `{"id": null}`,
    a foreign key is set to NULL, or a log line says nothing useful.

    ## Known problems
    A call that receives the session or the object may flush; the rule stays silent
    when one sits between the `add()` and the read. So it does when the object is filled
    from a dict before the read (`ref.update(values)`, oslo.db's way, or `setattr(ref, ...)`):
    the dict may hold the key. A read that only tests the key
    (`if not user.id: session.flush()`, `if user.id is None`) is the code asking whether
    it was flushed, and is not reported.

    ## Example
    ```python
    user = User(email=email)
    session.add(user)
    send_welcome_email(user_id=user.id)
    ```

    Use instead:
    ```python
    user = User(email=email)
    session.add(user)
    session.flush()
    send_welcome_email(user_id=user.id)
    ```

    ## References
    - [Flushing](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#flushing)
    - [Session.flush()](https://docs.sqlalchemy.org/en/20/orm/session_api.html#sqlalchemy.orm.Session.flush)
    """

    code = "SQD304"
    name = "primary-key-read-after-add"
    pitfalls = ("P10",)
    severity = Severity.ERROR
    message = (
        "`{read}` is read before `{add}` (line {line}) is flushed: the primary key is still "
        "None — call `{flush}` first"
    )

    VALID = (
        # Made in a list and added whole, flushed before the keys are read.
        Valid(
            """
            from app.models import User

            def create_many(session, emails):
                users = [User(email=e) for e in emails]
                session.add_all(users)
                session.flush()
                return [u.id for u in users]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Unpacked from a helper's tuple, and a pair flushed before the read.
        Valid(
            """
            from app.models import User

            def create_pair(session, make_pair):
                owner, guest = make_pair()
                session.add_all([owner, guest])
                first, second = User(email="a@x"), User(email="b@x")
                session.add_all([first, second])
                session.flush()
                return owner.id, first.id
            """,
            path="app/views.py",
            files=_FILES,
        ),
        Valid(_IMPERATIVE.format(flush="\n    session.flush()")),
        # An `Annotated` alias that is not a key.
        Valid(
            """
            from app.models import Post

            async def add_post(session, title):
                post = Post(title=title)
                session.add(post)
                return post.created_at
            """,
            path="app/repo.py",
            files=_ALIAS_FILES,
        ),
        # Read only in the branch that found the row (hypothesis/h's DocumentURI upsert): the
        # object made and added in the other branch never reaches it.
        Valid(
            """
            import logging
            from app.models import User

            log = logging.getLogger(__name__)

            def create_or_update(session, email, name):
                user = session.query(User).filter(User.email == email).first()
                if user is None:
                    user = User(email=email)
                    session.add(user)
                elif user.name != name:
                    log.warning("User %s was renamed", user.id)
                user.name = name
                return user
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        # Tested for None: the code knows it may not be flushed yet (an upsert).
        Valid(
            """
            from app.models import User

            def upsert(session, user, email):
                if user is None:
                    user = User(email=email)
                    session.add(user)
                user.email = email
                if not user.id:
                    session.flush()
                return user.id

            def create(session, email):
                user = User(email=email)
                session.add(user)
                if user.id is None and email:
                    session.flush()
                return user.id
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        Valid(
            """
            from app.models import User

            def create(session, email):
                user = User(email=email)
                session.add(user)
                session.flush()
                return user.id

            async def create_async(session, email):
                user = User(email=email)
                session.add(user)
                await session.commit()
                return {"id": user.id}
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        # The key is given by the caller; a column that is not the key.
        Valid(
            """
            from app.models import User

            def create(session, user_id, email):
                user = User(id=user_id, email=email)
                session.add(user)
                other = User(email=email)
                session.add(other)
                return user.id, other.email
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        # A query autoflushes; refresh() flushes; a with-block that commits on exit.
        Valid(
            """
            from sqlalchemy import select
            from app.models import User

            def create(session, factory, email):
                user = User(email=email)
                session.add(user)
                session.scalars(select(User)).all()
                print(user.id)
                with factory.begin() as s:
                    other = User(email=email)
                    s.add(other)
                print(other.id)
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        # Something that might flush sits in between.
        Valid(
            """
            from app.models import User
            from app.service import finalize

            def create(session, email):
                user = User(email=email)
                session.add(user)
                finalize(session)
                return user.id
            """,
            path="app/crud.py",
            files={**_FILES, "app/service.py": "def finalize(session):\n    session.flush()\n"},
        ),
        # A dataclass-mapped model fills Python-side defaults when it is built.
        Valid(
            """
            import uuid
            from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

            class Base(MappedAsDataclass, DeclarativeBase):
                pass

            class Job(Base):
                __tablename__ = "jobs"
                id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default_factory=uuid.uuid4)

            def enqueue(session):
                job = Job()
                session.add(job)
                return job.id
            """
        ),
        # Not a mapped class.
        Valid(
            """
            from dataclasses import dataclass

            @dataclass
            class Job:
                id: int | None = None

            def enqueue(queue):
                job = Job()
                queue.add(job)
                return job.id
            """
        ),
        # Filled from a dict that may hold the key (cinder's volume_type_create()).
        Valid(
            """
            import uuid
            from app.models import User
            def create(session, values):
                if not values.get("id"):
                    values["id"] = uuid.uuid4().int
                user = User()
                user.update(values)
                session.add(user)
                return user.id
            def create_from(session, values):
                user = User()
                for key, value in values.items():
                    setattr(user, key, value)
                session.add(user)
                return user.id
            """,
            files=_FILES,
        ),
        # Added through a unit of work's repository, then the unit of work commits.
        Valid(
            """
            from app.models import User

            def register(email, uow):
                with uow:
                    user = User(email=email)
                    uow.users.add(user)
                    uow.commit()
                    return user.id
            """,
            path="app/services.py",
            files=_FILES,
        ),
    )
    INVALID = (
        # A bulk-create endpoint: made in a list, added whole, keys read in a comprehension.
        Invalid(
            """
            from app.models import User

            def create_many(session, emails):
                users = [User(email=e) for e in emails]
                session.add_all(users)
                return [u.id for u in users]
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
        ),
        # Made two at a time and unpacked.
        Invalid(
            """
            from app.models import User

            def create_pair(session):
                owner, guest = User(email="a@x"), User(email="b@x")
                session.add_all([owner, guest])
                return {"owner": owner.id}
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
        ),
        # Added through a unit of work's repository, read before the unit of work commits.
        Invalid(
            """
            from app.models import User

            def register(email, uow):
                with uow:
                    user = User(email=email)
                    uow.users.add(user)
                    user_id = user.id
                    uow.commit()
                    return user_id
            """,
            path="app/services.py",
            files=_FILES,
            line=7,
        ),
        # Read after the `if`/`else`, which the added object reaches.
        Invalid(
            """
            import logging
            from app.models import User

            log = logging.getLogger(__name__)

            def create_or_update(session, email, name):
                user = session.query(User).filter(User.email == email).first()
                if user is None:
                    user = User(email=email)
                    session.add(user)
                elif user.name != name:
                    log.warning("User %s was renamed", user.id)
                log.info("User %s updated", user.id)
                return user
            """,
            path="app/crud.py",
            files=_FILES,
            line=13,
        ),
        # Another object updated, or the dict updated and not the object.
        Invalid(
            """
            from app.models import User
            def create(session, other, values, email):
                user = User(email=email)
                other.update(values)
                values.update(email=email)
                session.add(user)
                return user.id
            """,
            files=_FILES,
        ),
        Invalid(
            _IMPERATIVE.format(flush=""),
            line=19,
            expected_message=(
                "`account.id` is read before `session.add(account)` (line 18) is flushed: the "
                "primary key is still None — call `session.flush()` first"
            ),
        ),
        # Compared with another value, not tested for None.
        Invalid(
            """
            from app.models import User

            def register(session, email, owner_id):
                user = User(email=email)
                session.add(user)
                if user.id == owner_id:
                    return "owner"
            """,
            path="app/crud.py",
            files=_FILES,
            line=6,
        ),
        Invalid(
            """
            from app.models import User

            def register(session, email):
                user = User(email=email)
                session.add(user)
                return {"id": user.id, "email": user.email}
            """,
            path="app/crud.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`user.id` is read before `session.add(user)` (line 5) is flushed: the primary "
                "key is still None — call `session.flush()` first"
            ),
        ),
        # A Python-side default is applied at flush too.
        Invalid(
            """
            from app.models import Token

            async def issue(session):
                token = Token()
                session.add(token)
                return str(token.token_id)
            """,
            path="app/crud.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`token.token_id` is read before `session.add(token)` (line 5) is flushed: the "
                "primary key is still None — call `await session.flush()` first"
            ),
        ),
        # add_all() and a foreign key built from the unflushed key.
        Invalid(
            """
            from app import models

            def seed(db):
                admin = models.User(email="admin@example.com")
                db.add_all([admin])
                audit = {"user_id": admin.id}
                db.commit()
                return audit
            """,
            path="app/seed.py",
            files=_FILES,
            line=6,
        ),
        # The key comes from `id: Mapped[intpk]`, an alias in another module.
        Invalid(
            """
            from app.models import Post

            class PostRepository:
                def __init__(self, session):
                    self.session = session

                async def add_post(self, title):
                    post = Post(title=title)
                    self.session.add(post)
                    return post.id
            """,
            path="app/repo.py",
            files=_ALIAS_FILES,
            line=10,
            expected_message=(
                "`post.id` is read before `self.session.add(post)` (line 9) is flushed: the "
                "primary key is still None — call `await self.session.flush()` first"
            ),
        ),
        # Flask-SQLAlchemy's db.session.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy

            db = SQLAlchemy()

            class Item(db.Model):
                id = db.Column(db.Integer, primary_key=True)

            def create():
                item = Item()
                db.session.add(item)
                return {"id": item.id}, 201
            """,
            line=11,
        ),
        # SQLModel: `id: int | None = Field(default=None, primary_key=True)`.
        Invalid(
            """
            from sqlmodel import Field, Session, SQLModel

            class Hero(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                name: str

            def create_hero(session: Session, name: str) -> int:
                hero = Hero(name=name)
                session.add(hero)
                print("created hero", hero.id)
                session.commit()
                return hero.id
            """,
            line=10,
        ),
    )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node):
            return
        flow = flow_for(self.ctx, node)
        index = self.ctx.index
        for name, bindings in flow.bindings.items():
            for binding in bindings:
                if binding.kind != "assign":
                    continue
                made = binding.value
                call: ast.Call | None
                loops: list[Binding | None]
                if isinstance(made, ast.ListComp) and isinstance(made.elt, ast.Call):
                    # `users = [User(...) for ...]`, added whole: read through a loop over it.
                    call, loops = made.elt, _loops_over(flow, name, binding)
                    if not loops:
                        continue
                else:
                    call, loops = _made(binding), [None]
                if call is None:
                    continue
                if not isinstance(call.func, (ast.Name, ast.Attribute)):
                    continue
                model = index.model(flow.qualify(call.func))
                if model is None:
                    continue
                keys = [
                    c.attr
                    for c in model.primary_keys()
                    if not (c.python_default and self._defaults_on_construction(model))
                ]
                if not keys or any(kw.arg is None or kw.arg in keys for kw in call.keywords):
                    continue
                for loop in loops:
                    self._check(
                        flow, binding, name, keys, isinstance(node, ast.AsyncFunctionDef), loop
                    )

    visit_AsyncFunctionDef = visit_FunctionDef

    def _defaults_on_construction(self, model: Model) -> bool:
        """SQLModel (pydantic) and `MappedAsDataclass` models apply Python-side defaults
        when the object is built, not at flush."""
        if model.flavor == "sqlmodel":
            return True
        for ancestor in model.lineage:
            cls = self.ctx.index.class_facts(ancestor)
            if cls is None:
                continue
            names = [*cls.bases, *cls.decorators]
            if any(
                n.rpartition(".")[2] in ("MappedAsDataclass", "mapped_as_dataclass") for n in names
            ):
                return True
        return False

    def _check(
        self,
        flow: FunctionFlow,
        binding: Binding,
        name: str,
        keys: list[str],
        is_async: bool,
        loop: Binding | None = None,
    ) -> None:
        """``loop``: the objects are a list, read one by one through this loop over it."""
        add = self._add(flow, binding, name)
        if add is None:
            return
        session = receiver_key(add.func.value)  # type: ignore[attr-defined]
        reader = loop or binding
        for read in sorted(flow.attr_loads.get(reader.name, ()), key=_pos):
            if _pos(read) <= _pos(add) or read.attr not in keys:
                continue
            if _other_branch(flow, add, read):
                continue  # `if ...: session.add(obj)` / `else: obj.id`: never after the add
            if flow.binding(reader.name, read) is not reader:
                if loop is not None:
                    continue
                return
            if not isinstance(read.ctx, ast.Load):
                return  # the key is assigned by hand
            if _tests_for_none(flow, read):
                continue  # `if not user.id: session.flush()` asks whether it is still None
            if _filled_in_bulk(flow, reader.name, reader, read):
                return
            if self._flushed_between(flow, add, read, session, name):
                return
            flush = f"await {session}.flush()" if is_async else f"{session}.flush()"
            self.report(
                read,
                read=f"{reader.name}.{read.attr}",
                add=self.ctx.text(add),
                line=add.lineno,
                flush=flush,
            )
            return

    @staticmethod
    def _add(flow: FunctionFlow, binding: Binding, name: str) -> ast.Call | None:
        for call in flow.calls:
            func = call.func
            if (
                not isinstance(func, ast.Attribute)
                or func.attr not in ("add", "add_all")
                or not call.args
            ):
                continue
            if _pos(call) < binding.pos or receiver_key(func.value) is None:
                continue
            arg = call.args[0]
            items = (
                arg.elts
                if isinstance(arg, (ast.List, ast.Tuple)) and func.attr == "add_all"
                else [arg]
            )
            if any(isinstance(item, ast.Name) and item.id == name for item in items):
                return call
        return None

    @staticmethod
    def _flushed_between(
        flow: FunctionFlow, add: ast.Call, read: ast.Attribute, session: str | None, name: str
    ) -> bool:
        start, end = _pos(add), _pos(read)
        # Leaving a `with` block (a `begin()`, a unit of work) may commit.
        if any(contains(w, add) and not contains(w, read) for w in flow.withs):
            return True
        for call in flow.calls:
            if call is add or not start < _pos(call) < end:
                continue
            func = call.func
            if isinstance(func, ast.Attribute) and receiver_key(func.value) == session:
                if func.attr not in _NOT_FLUSHING:
                    return True
                continue
            if isinstance(func, ast.Attribute) and _commits_owner_of(func, session):
                return True
            for arg in (*call.args, *(kw.value for kw in call.keywords)):
                if isinstance(arg, ast.Name) and arg.id in (session, name):
                    return True
                if session is not None and receiver_key(arg) == session:
                    return True
        return False
