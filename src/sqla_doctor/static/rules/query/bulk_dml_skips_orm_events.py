"""SQD305: a bulk UPDATE/DELETE on a class whose ORM events, validators or cascades it skips."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import ObjectsValue, SessionValue, StatementValue, flow_for
from sqla_doctor.static.index import Model
from sqla_doctor.static.index.models import literal_str
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to

_MODELS = """
from datetime import datetime
from sqlalchemy import ForeignKey, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    name: Mapped[str]
    updated_at: Mapped[datetime | None]
    posts: Mapped[list["Post"]] = relationship(cascade="all, delete-orphan")

    @validates("email")
    def normalize_email(self, key, value):
        return value.lower()

class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str]

class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str]
"""
_EVENTS = """
from datetime import datetime
from sqlalchemy import event
from app.models import User

@event.listens_for(User, "before_update")
def touch(mapper, connection, target):
    target.updated_at = datetime.now()
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS, "app/events.py": _EVENTS}


_MENTIONS = """
import os

from sqlalchemy import delete, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Notification(Base):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_object_id: Mapped[int]


class Mention(Base):
    __tablename__ = "mentions"
    id: Mapped[int] = mapped_column(primary_key=True)
    comment_id: Mapped[int]


class Export(Base):
    __tablename__ = "exports"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str]


@event.listens_for(Mention, "after_delete")
def on_mention_delete(mapper, connection, old_mention):
    @event.listens_for(Session, "after_flush", once=True)
    def receive_after_flush(session, context):
        session.query(Notification).filter(
            Notification.event_object_id == old_mention.comment_id
        ).delete()


@event.listens_for(Export, "after_delete")
def on_export_delete(mapper, connection, old_export):
    connection.execute(delete(Notification).where(Notification.event_object_id == old_export.id))
    os.remove(old_export.path)
"""

class BulkDmlSkipsOrmEvents(Rule):
    """
    ## What it does
    Checks for a bulk `update(Model)` / `delete(Model)` statement (or the legacy
    `query.update()` / `query.delete()`, or `bulk_update_mappings()`) on a class that has
    ORM event listeners for that operation (`before_update`, `after_delete`, … on the
    class, a parent with `propagate=True`, or every mapper), `@validates` methods for
    the columns it sets, or relationships with an ORM `delete` cascade. Listeners are
    found in every module of the project.

    ## Why is this bad?
    Bulk statements go straight to the database: no objects are loaded, so no mapper
    event fires, no validator runs and no cascade is applied. The `updated_at` listener
    silently stops updating, an email is stored un-normalized, deleting users leaves
    their posts behind (or fails on the foreign key).

    ## Known problems
    Statements whose values include what a listener would set (an `updated_at=`) still
    fire; the rule cannot tell the logic was copied. A delete preceded in the same
    function (or in a helper of the module it calls first) by a bulk delete of the
    cascade's children, or followed by one of every row of their table, or beside a
    loop that `session.delete()`s children it loaded by a statement comparing a column
    to a value the parents' statement compares too (`User.id == user.id`, then
    `Post.user_id == user.id`) (the cascade done by hand), is not reported for that
    cascade, nor is
    a statement a listener runs itself (in its body, or in a module helper only
    listeners call) for that listener. A listener
    whose body acts only when some attributes changed (`if inspect(target).attrs.email.
    history.has_changes():`) is not reported for an update that sets none of them (its
    `.values()` keys, or the string keys of a local dict it is given, `values["theme"] =
    ...`), nor one whose body (or a function it defines, such as an `after_flush` hook) only
    bulk-deletes rows of models the function deletes by hand too.

    ## Example
    ```python
    session.execute(update(User).where(User.id == user_id).values(email=email))
    ```

    Use instead:
    ```python
    user = session.get(User, user_id)
    user.email = email  # validators and before_update listeners run on flush
    ```
    or apply the listener's logic in the statement itself.

    ## References
    - [ORM-Enabled INSERT, UPDATE, and DELETE statements](https://docs.sqlalchemy.org/en/20/orm/queryguide/dml.html)
    - [Important Notes and Caveats for ORM-Enabled Update and Delete](https://docs.sqlalchemy.org/en/20/orm/queryguide/dml.html#orm-queryguide-update-delete-caveats)
    """

    code = "SQD305"
    name = "bulk-dml-skips-orm-events"
    pitfalls = ("P14",)
    severity = Severity.WARNING
    message = (
        "`{statement}` runs as one {verb} statement and skips {skipped} for these rows — load "
        "the objects and change them, or do the same work in the statement"
    )

    VALID = (
        Valid(
            """
            from sqlalchemy import delete, update
            from app.models import Tag, User

            def a(session):
                session.execute(update(Tag).values(label="x"))
                session.execute(delete(Tag).where(Tag.id == 3))
                user = session.get(User, 1)
                user.email = "NEW@EXAMPLE.COM"
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A column no validator covers, and no update listener in this project.
        Valid(
            """
            from sqlalchemy import update
            from app.models import User

            def a(session):
                session.execute(update(User).values(name="x"))
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/models.py": _MODELS},
        ),
        # Core on a Table, not a mapped class.
        Valid(
            """
            from sqlalchemy import Column, Integer, MetaData, String, Table, update

            meta = MetaData()
            users = Table("users", meta, Column("id", Integer), Column("email", String))

            def a(conn):
                conn.execute(update(users).values(email="x"))
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # The cascade done by hand: the children's rows deleted first.
        Valid(
            """
            from sqlalchemy import delete
            from app.models import Post, User

            def purge(session, ids):
                session.execute(delete(Post).where(Post.user_id.in_(ids)))
                session.execute(delete(User).where(User.id.in_(ids)))

            def purge_legacy(session, ids):
                session.query(Post).filter(Post.user_id.in_(ids)).delete()
                session.query(User).filter(User.id.in_(ids)).delete()
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # The children's rows deleted first by a helper of the module (onyx's chat
        # sessions).
        Valid(
            """
            from sqlalchemy import delete
            from app.models import Post, User

            def delete_posts_of(session, user_id):
                session.execute(delete(Post).where(Post.user_id == user_id))
                session.commit()

            def purge(session, user_id):
                delete_posts_of(session, user_id)
                session.execute(delete(User).where(User.id == user_id))
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # The children of the same parents (picked by the value the parents' statement
        # compares too) loaded and deleted through the session, after or before
        # (calibre-web's user deletion and its Kobo reading states).
        Valid(
            """
            from sqlalchemy import delete, select
            from app.models import Post, User

            def purge(session, user):
                session.query(User).filter(User.id == user.id).delete()
                for post in session.query(Post).filter(Post.user_id == user.id).all():
                    session.delete(post)

            def purge_core(session, ids):
                for post in session.scalars(select(Post).where(Post.user_id.in_(ids))):
                    session.delete(post)
                session.execute(delete(User).where(User.id.in_(ids)))
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Every row of the children's table deleted, after the parents': whatever the
        # cascade would have removed is gone either way.
        Valid(
            """
            from sqlalchemy import delete
            from app.models import Post, User

            def reset(session):
                session.query(User).delete()
                session.query(Post).delete()
                session.commit()

            def reset_core(session):
                session.execute(delete(User))
                session.execute(delete(Post))
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A listener's own statement on its connection, in a helper only it calls.
        Valid(
            """
            from sqlalchemy import event, update
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)
                email: Mapped[str]
                aliases: Mapped[str]

            def _release_alias(email, connection, account_id):
                connection.execute(
                    update(Account).where(Account.id != account_id).values(aliases="")
                )

            @event.listens_for(Account, "before_update")
            def release(mapper, connection, target):
                _release_alias(target.email, connection, target.id)
            """
        ),
        # A listener that acts only when the email changed, for statements that leave it;
        # its helper, called by the insert and the update listeners, runs a statement of
        # its own.
        Valid(
            """
            from sqlalchemy import event, inspect, update
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)
                email: Mapped[str]
                theme: Mapped[str]
                aliases: Mapped[str]

            def _release(email, connection):
                cleared = update(Account).where(Account.aliases == email).values(aliases="")
                connection.execute(cleared)

            @event.listens_for(Account, "before_insert")
            def released_on_insert(mapper, connection, target):
                _release(target.email, connection)

            @event.listens_for(Account, "before_update")
            def released_on_update(mapper, connection, target):
                if inspect(target).attrs.email.history.has_changes():
                    _release(target.email, connection)

            def set_theme(session, account_id, theme):
                session.execute(update(Account).where(Account.id == account_id).values(theme=theme))

            def set_preferences(session, account_id, theme=None, aliases=None):
                values: dict[str, str] = {}
                if theme is not None:
                    values["theme"] = theme
                if aliases is not None:
                    values["aliases"] = aliases
                if values:
                    session.execute(
                        update(Account).where(Account.id == account_id).values(**values)
                    )
            """
        ),
        # A delete on a class whose children are deleted by the database.
        Valid(
            """
            from sqlalchemy import ForeignKey, delete
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Parent(Base):
                __tablename__ = "parents"
                id: Mapped[int] = mapped_column(primary_key=True)
                children: Mapped[list["Child"]] = relationship(
                    cascade="all, delete-orphan", passive_deletes=True
                )

            class Child(Base):
                __tablename__ = "children"
                id: Mapped[int] = mapped_column(primary_key=True)
                parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id", ondelete="CASCADE"))

            def purge(session):
                session.execute(delete(Parent).where(Parent.id < 10))
            """
        ),
        # Not SQLAlchemy: a dict's update().
        Valid(
            """
            from app.models import User

            def a(session, data: dict):
                data.update({"email": "x"})
                session.get(User, 1)
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A listener that only deletes rows of other models, which the function deletes
        # by hand too.
        Valid(
            """
            from app.models import Mention, Notification

            def update_mentions(session, comment_id, removed):
                session.query(Mention).filter(
                    Mention.comment_id == comment_id, Mention.id.in_(removed)
                ).delete()
                session.query(Notification).filter(
                    Notification.event_object_id == comment_id
                ).delete()
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/models.py": _MENTIONS},
        ),
    )
    INVALID = (
        # The listener's deletes not done by hand, or a listener that does more (removes
        # a file) than the deletes the function repeats.
        Invalid(
            """
            from sqlalchemy import delete
            from app.models import Export, Mention, Notification

            def drop_mentions(session, comment_id):
                session.query(Mention).filter(Mention.comment_id == comment_id).delete()

            def drop_exports(session, ids):
                session.execute(delete(Export).where(Export.id.in_(ids)))
                session.execute(delete(Notification).where(Notification.event_object_id.in_(ids)))
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/models.py": _MENTIONS},
            count=2,
        ),
        Invalid(
            """
            from sqlalchemy import update
            from app.models import User

            def rename(session, user_id, name):
                session.execute(update(User).where(User.id == user_id).values(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
            line=5,
            expected_message=(
                "`update(User)` runs as one UPDATE statement and skips the `before_update` "
                "listener `touch` (app/events.py:5) for these rows — load the objects and change "
                "them, or do the same work in the statement"
            ),
        ),
        # A validated column, through the legacy Query API.
        Invalid(
            """
            from app.models import User

            def set_email(session, user_id, email):
                session.query(User).filter(User.id == user_id).update({"email": email})
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/models.py": _MODELS},
            line=4,
        ),
        # A delete that skips the ORM cascade to posts.
        Invalid(
            """
            import sqlalchemy as sa
            from app import models

            def purge_inactive(session):
                session.execute(sa.delete(models.User).where(models.User.name == ""))
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/models.py": _MODELS},
            line=5,
        ),
        # Only some of the children's rows deleted afterwards: the parents' delete still
        # leaves the others behind.
        Invalid(
            """
            from sqlalchemy import delete
            from app.models import Post, User

            def reset(session, ids):
                session.query(User).delete()
                session.query(Post).filter(Post.user_id.in_(ids)).delete()

            def reset_core(session, ids):
                session.execute(delete(User))
                session.execute(delete(Post).where(Post.user_id.in_(ids)))
            """,
            path="app/jobs.py",
            files=_FILES,
            count=2,
        ),
        # Children deleted one by one, but picked by another value than the parents: not
        # (only) theirs.
        Invalid(
            """
            from app.models import Post, User

            def purge(session, user, title):
                session.query(User).filter(User.id == user.id).delete()
                for post in session.query(Post).filter(Post.title == title).all():
                    session.delete(post)
            """,
            path="app/jobs.py",
            files=_FILES,
            line=4,
        ),
        # `delete` and the model imported inside the function (an import cycle dodged).
        Invalid(
            """
            def purge_inactive(session):
                from sqlalchemy import delete
                from app.models import User

                session.execute(delete(User).where(User.name == ""))
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/models.py": _MODELS},
            line=5,
        ),
        # A listener on the declarative base with propagate=True, event.listen() form.
        Invalid(
            """
            from sqlalchemy import event, update
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Invoice(Base):
                __tablename__ = "invoices"
                id: Mapped[int] = mapped_column(primary_key=True)
                total: Mapped[int]

            def audit(mapper, connection, target):
                pass

            event.listen(Base, "after_update", audit, propagate=True)

            def zero(session):
                session.execute(update(Invoice).values(total=0))
            """,
            line=18,
        ),
        # The statement sets the attribute the listener watches.
        Invalid(
            """
            from sqlalchemy import event, update
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, attributes

            class Base(DeclarativeBase):
                pass

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)
                email: Mapped[str]

            @event.listens_for(Account, "before_update")
            def audit(mapper, connection, target):
                if not attributes.get_history(target, "email").has_changes():
                    return
                print("email changed")

            def rename(session, account_id, email):
                session.execute(update(Account).where(Account.id == account_id).values(email=email))
            """,
            line=19,
        ),
        # The helper deletes the children only after the parents, and only some of them.
        Invalid(
            """
            from sqlalchemy import delete
            from app.models import Post, User

            def delete_posts_of(session, user_id):
                session.execute(delete(Post).where(Post.user_id == user_id))

            def purge(session, user_id):
                session.execute(delete(User).where(User.id == user_id))
                delete_posts_of(session, user_id)
            """,
            path="app/jobs.py",
            files=_FILES,
            line=8,
        ),
        # A dict of values that may hold the email, or keys the function does not write
        # out: the listener may have to run.
        Invalid(
            """
            from sqlalchemy import event, inspect, update
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)
                email: Mapped[str]
                theme: Mapped[str]

            @event.listens_for(Account, "before_update")
            def released_on_update(mapper, connection, target):
                if inspect(target).attrs.email.history.has_changes():
                    print("email changed")

            def set_preferences(session, account_id, theme=None, email=None):
                values = {"theme": theme}
                if email is not None:
                    values["email"] = email
                session.execute(update(Account).where(Account.id == account_id).values(values))

            def set_fields(session, account_id, fields):
                values = {}
                for name, value in fields.items():
                    values[name] = value
                session.execute(update(Account).where(Account.id == account_id).values(**values))
            """,
            count=2,
        ),
        # Children deleted after the parent, and a helper the application calls too.
        Invalid(
            """
            from sqlalchemy import delete, event, update
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)
                aliases: Mapped[str]

            def clear_aliases(connection, account_id):
                connection.execute(
                    update(Account).where(Account.id != account_id).values(aliases="")
                )

            @event.listens_for(Account, "before_update")
            def release(mapper, connection, target):
                clear_aliases(connection, target.id)

            def reset(session):
                clear_aliases(session.connection(), 0)
            """,
            line=14,
        ),
        Invalid(
            """
            from sqlalchemy import delete
            from app.models import Post, User

            def purge(session, ids):
                session.execute(delete(User).where(User.id.in_(ids)))
                session.execute(delete(Post).where(Post.user_id.in_(ids)))
            """,
            path="app/jobs.py",
            files=_FILES,
            line=5,
        ),
        # ORM bulk update by primary key skips events too.
        Invalid(
            """
            from app.models import User

            def batch(session, rows):
                session.bulk_update_mappings(User, rows)
            """,
            path="app/jobs.py",
            files=_FILES,
            line=4,
        ),
    )

    def visit_Module(self, node: ast.Module) -> None:
        # Alembic revisions update rows in bulk on purpose: the model's events are the
        # application's, not the migration's.
        names = self.ctx.facts.names.defined
        self._skip = "upgrade" in names and "revision" in names

    @calls_to(named=("update", "delete"), ending=("update", "delete", "bulk_update_mappings"))
    def visit_Call(self, node: ast.Call) -> None:
        if getattr(self, "_skip", False):
            return
        func = node.func
        tail = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if tail not in ("update", "delete", "bulk_update_mappings") and not (
            isinstance(func, ast.Name) and self.ctx.names.sqla_name(func) in ("update", "delete")
        ):
            return
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("update", "delete")
            and self._legacy(node, func)
        ):
            return
        if isinstance(func, ast.Attribute) and func.attr == "bulk_update_mappings" and node.args:
            model = self.ctx.index.model_for_expr(self.ctx, node.args[0])
            if model is not None:
                self._check(node, model, "update", None, f"bulk_update_mappings({model.name})")
            return
        if not node.args or not isinstance(func, (ast.Name, ast.Attribute)):
            return
        flow = flow_for(self.ctx, node)
        verb = flow.sqla_name(func)
        if verb not in ("update", "delete"):
            return
        model = (
            self.ctx.index.model(flow.qualify(node.args[0]))
            if isinstance(node.args[0], (ast.Name, ast.Attribute))
            else None
        )
        if model is None:
            return
        keys = self._values_keys(flow, node) if verb == "update" else None
        self._check(node, model, verb, keys, self.ctx.text(node))

    def _legacy(self, node: ast.Call, func: ast.Attribute) -> bool:
        """`session.query(User).filter(...).update({...})`; False if not a Query."""
        flow = flow_for(self.ctx, node)
        query = flow.value(func.value)
        if not isinstance(query, StatementValue) or query.kind != "query":
            return False
        model = self.ctx.index.model(query.model)
        if model is None:
            return True
        keys: set[str] | None = None
        if func.attr == "update":
            keys = set()
            values = node.args[0] if node.args else None
            if not isinstance(values, ast.Dict):
                keys = None
            else:
                for key in values.keys:
                    name = literal_str(key) or (
                        key.attr if isinstance(key, ast.Attribute) else None
                    )
                    if name is None:
                        keys = None
                        break
                    keys.add(name)
        self._check(node, model, func.attr, keys, f"query({model.name}).{func.attr}()")
        return True

    def _values_keys(self, flow: object, node: ast.Call) -> set[str] | None:
        """Column names a chained `.values(...)` sets; None when not literal."""
        current: ast.AST | None = node
        keys: set[str] = set()
        found = False
        parent = self.ctx.parent(node)
        while isinstance(parent, ast.Attribute):
            grand = self.ctx.parent(parent)
            if not isinstance(grand, ast.Call):
                break
            if parent.attr == "values":
                found = True
                for kw in grand.keywords:
                    if kw.arg is None:
                        spread = self._dict_keys(kw.value)
                        if spread is None:
                            return None
                        keys |= spread
                    else:
                        keys.add(kw.arg)
                for arg in grand.args:
                    if not isinstance(arg, ast.Dict):
                        given = self._dict_keys(arg)
                        if given is None:
                            return None
                        keys |= given
                        continue
                    for key in arg.keys:
                        name = literal_str(key) or (
                            key.attr if isinstance(key, ast.Attribute) else None
                        )
                        if name is None:
                            return None
                        keys.add(name)
            current = grand
            parent = self.ctx.parent(current)
        return keys if found else None

    def _dict_keys(self, expr: ast.expr) -> set[str] | None:
        """The keys a local dict can hold (``values = {}`` then ``values["a"] = ...``
        under conditions): its function binds it only to dict literals with string keys
        and stores only under string keys; None when it is used any other way (handed to
        a call, updated, stored under a computed key)."""
        if not isinstance(expr, ast.Name):
            return None
        scope = self.ctx.enclosing_scope(expr)
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        keys: set[str] = set()
        for node in ast.walk(scope):
            if not (isinstance(node, ast.Name) and node.id == expr.id) or node is expr:
                continue
            parent = self.ctx.parent(node)
            if isinstance(node.ctx, ast.Store):
                value = parent.value if isinstance(parent, (ast.Assign, ast.AnnAssign)) else None
                if not isinstance(value, ast.Dict) or (
                    isinstance(parent, ast.Assign) and len(parent.targets) != 1
                ):
                    return None
                for key in value.keys:
                    name = literal_str(key) if key is not None else None
                    if name is None:
                        return None
                    keys.add(name)
            elif isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store):
                name = literal_str(parent.slice)
                if name is None:
                    return None
                keys.add(name)
            elif not isinstance(parent, (ast.If, ast.While, ast.BoolOp, ast.UnaryOp)):
                return None  # a read that may change it or hand it on
        return keys

    def _run_by_listeners(self, node: ast.Call, names: set[str]) -> bool:
        """Whether ``node`` is in a module function that is one of the listeners
        ``names``, or that only they call (and no other module imports)."""
        function = next(
            (
                a
                for a in self.ctx.ancestors(node)
                if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))
                and self.ctx.parent(a) is self.ctx.tree
            ),
            None,
        )
        if function is None or not names:
            return False
        if function.name in names:
            return True
        imported = self.ctx.index.imported_names(self.ctx.facts.module)
        if function.name in imported or "*" in imported:
            return False
        callers: set[str | None] = set()
        for call in ast.walk(self.ctx.tree):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == function.name
            ):
                caller = next(
                    (
                        a.name
                        for a in self.ctx.ancestors(call)
                        if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))
                    ),
                    None,
                )
                callers.add(caller)
        return bool(callers) and callers <= names

    def _children_deleted_by_hand(
        self, node: ast.Call, child: Model, *, anywhere: bool = False
    ) -> bool:
        """Whether the function deletes ``child`` rows in bulk itself: ``delete(Child)`` or
        ``query(Child)....delete()`` before ``node`` (or after it, ``anywhere``), directly
        or in a helper of this module it calls first, or every row of the table after it
        (an unfiltered ``query(Child).delete()``, ``delete(Child)`` with no ``.where``),
        which removes whatever the cascade would have, in either order."""
        flow = flow_for(self.ctx, node)
        for call in flow.calls:
            if call is node:
                continue
            before = anywhere or (call.lineno, call.col_offset) < (node.lineno, node.col_offset)
            if self._deletes(call, child, before=before) or self._deletes_loaded(call, child, node):
                return True
            helper = self._module_helper(call) if before else None
            if helper is not None and any(
                self._deletes(inner, child, before=True)
                for inner in ast.walk(helper)
                if isinstance(inner, ast.Call)
            ):
                return True
        return False

    def _deletes(self, call: ast.Call, child: Model, *, before: bool) -> bool:
        """``call`` deletes ``child`` rows in bulk: any of them when it runs ``before`` the
        parents' delete, else every row."""
        flow = flow_for(self.ctx, call)
        index = self.ctx.index
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "delete":
            query = flow.value(func.value)
            if isinstance(query, StatementValue) and query.kind == "query":
                target = index.model(query.model)
                if (
                    target is not None
                    and target.qualname == child.qualname
                    and (before or _unfiltered_query(func.value))
                ):
                    return True
        if (
            isinstance(func, (ast.Name, ast.Attribute))
            and flow.sqla_name(func) == "delete"
            and call.args
            and isinstance(call.args[0], (ast.Name, ast.Attribute))
        ):
            target = index.model(flow.qualify(call.args[0]))
            if (
                target is not None
                and target.qualname == child.qualname
                and (before or not isinstance(self.ctx.parent(call), ast.Attribute))
            ):
                return True
        return False

    def _deletes_loaded(self, call: ast.Call, child: Model, parents: ast.Call) -> bool:
        """``session.delete(obj)`` of ``child`` objects the function loaded by a statement
        that compares a column to a value the parents' statement compares too (calibre-web:
        `query(ReadBook).filter(content.id == ReadBook.user_id).delete()`, then each
        `query(KoboReadingState).filter(KoboReadingState.user_id == content.id)` row
        `session.delete()`d): the children of those parents, deleted with their own ORM
        cascades, before or after."""
        func = call.func
        if not (
            isinstance(func, ast.Attribute)
            and func.attr == "delete"
            and len(call.args) == 1
            and not call.keywords
        ):
            return False
        flow = flow_for(self.ctx, call)
        deleted = flow.value(call.args[0])
        if not (
            isinstance(deleted, ObjectsValue)
            and (target := self.ctx.index.model(deleted.model)) is not None
            and target.qualname == child.qualname
        ):
            return False
        loaded = deleted.stmt.node if deleted.stmt is not None else deleted.node
        # The session that loaded them (`ub.session`, a module's, unknown to the flow).
        receiver = deleted.receiver or (deleted.stmt.receiver if deleted.stmt else None)
        if loaded is None or not (
            isinstance(flow.value(func.value), SessionValue)
            or receiver == ast.unparse(func.value)
        ):
            return False
        return bool(self._compared(loaded) & self._compared(self._chain(parents)))

    def _chain(self, node: ast.expr) -> ast.expr:
        """The whole method chain ``node`` starts: ``delete(User).where(...)`` for
        ``delete(User)``."""
        while True:
            parent = self.ctx.parent(node)
            if not isinstance(parent, ast.Attribute):
                return node
            call = self.ctx.parent(parent)
            if not (isinstance(call, ast.Call) and call.func is parent):
                return node
            node = call

    def _compared(self, statement: ast.AST) -> set[str]:
        """The source of what ``statement``'s comparisons compare columns to: ``user.id``
        in ``Post.user_id == user.id``, ``ids`` in ``Post.user_id.in_(ids)``."""
        flow = flow_for(self.ctx, statement)
        index = self.ctx.index
        operands: list[ast.expr] = []
        for node in ast.walk(statement):
            if isinstance(node, ast.Compare) and len(node.ops) == 1:
                operands.extend((node.left, node.comparators[0]))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "in_"
                and len(node.args) == 1
            ):
                operands.append(node.args[0])
        return {
            ast.unparse(operand)
            for operand in operands
            if not isinstance(operand, ast.Constant)
            and not (
                isinstance(operand, ast.Attribute)
                and index.model(flow.qualify(operand.value)) is not None
            )
        }

    def _module_helper(self, call: ast.Call) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The undecorated module-level function of this file ``call`` calls by name
        (``delete_messages(session_id, db)``)."""
        if not isinstance(call.func, ast.Name):
            return None
        found = [
            stmt
            for stmt in self.ctx.tree.body
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            and stmt.name == call.func.id
        ]
        if len(found) != 1 or found[0].decorator_list:
            return None
        return found[0]

    def _check(
        self, node: ast.Call, model: Model, verb: str, keys: set[str] | None, statement: str
    ) -> None:
        index = self.ctx.index
        skipped: list[str] = []
        listeners = index.mutation_listeners(model, verb)
        # Every listener this file defines, whatever it listens for.
        here = {listener.function for listener in self.ctx.facts.orm.listeners if listener.function}
        if self._run_by_listeners(node, here):
            # The listener's own statement on its connection (or a helper's only the
            # listeners call): running the listener for these rows would recurse.
            listeners = []
        for listener, path in listeners:
            if (
                verb == "update"
                and keys is not None
                and listener.watches
                and not set(listener.watches) & keys
            ):
                continue  # it acts only when an attribute the statement does not set changes
            if listener.deletes and all(
                (deleted := index.model(m)) is not None
                and self._children_deleted_by_hand(node, deleted, anywhere=True)
                for m in listener.deletes
            ):
                continue  # all it does is delete rows the function deletes by hand too
            name = f" `{listener.function}`" if listener.function else ""
            skipped.append(f"the `{listener.identifier}` listener{name} ({path}:{listener.line})")
        if verb == "update" and keys is not None:
            # Validators and attribute listeners matter only for the columns it sets.
            for attr, method in sorted(model.validators.items()):
                if attr in keys:
                    skipped.append(f'`@validates("{attr}")` (`{model.name}.{method}`)')
            for listener, path in index.listeners_for(model, ("set",)):
                if listener.attr and listener.attr in keys:
                    skipped.append(
                        f"the `set` listener on `{model.name}.{listener.attr}` "
                        f"({path}:{listener.line})"
                    )
        elif verb == "delete":
            for rel in index.relationships(model):
                facts = rel.facts
                if (
                    facts is None
                    or not facts.cascade
                    or facts.passive_deletes
                    or rel.target is None
                ):
                    continue
                if rel.direction not in ("one-to-many", "one-to-one"):
                    continue
                parts = {p.strip() for p in facts.cascade.split(",")}
                if not parts & {"all", "delete", "delete-orphan"}:
                    continue
                child = index.model(rel.target)
                # `ForeignKey(..., ondelete="CASCADE")`: the database does the cascade.
                if child is None or index.database_cascades(child, model):
                    continue
                if self._children_deleted_by_hand(node, child):
                    continue  # the cascade done by hand: the children's DELETE
                skipped.append(f'the `cascade="{facts.cascade}"` on `{rel.name}`')
        if not skipped:
            return
        if len(statement) > 40:
            statement = statement[:37] + "..."
        self.report(
            node,
            statement=statement.split(".where")[0].split(".values")[0],
            verb=verb.upper(),
            skipped=", ".join(skipped[:3]) + (" and more" if len(skipped) > 3 else ""),
        )


def _unfiltered_query(receiver: ast.expr) -> bool:
    """``session.query(Child)`` (or Flask-SQLAlchemy's ``Child.query``) itself, before any
    ``.filter()``: every row of the table."""
    if isinstance(receiver, ast.Attribute):
        return receiver.attr == "query"
    return (
        isinstance(receiver, ast.Call)
        and isinstance(receiver.func, ast.Attribute)
        and receiver.func.attr == "query"
        and len(receiver.args) == 1
        and not receiver.keywords
    )
