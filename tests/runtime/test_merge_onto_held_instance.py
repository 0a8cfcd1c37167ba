"""SQD162: session.merge() onto a row the session holds, replacing what it held."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from . import read_models
from .models import Comment, Post, User
from .read_models import Order
from .support import line_of, of_code, one, relative

CHANGED_FIX = (
    "set the incoming values on the object the session holds, or build the merged object "
    "with only the attributes it owns (merge() copies every attribute set on it)"
)


def first_user_id(engine: Engine) -> int:
    with Session(engine) as session:
        user_id = session.scalars(select(User.id).order_by(User.id)).first()
    assert user_id is not None
    return user_id


def detached_copy(engine: Engine) -> tuple[int, User]:
    """A user loaded by a session that is closed since."""
    user_id = first_user_id(engine)
    with Session(engine) as earlier:
        copy = earlier.get(User, user_id)
    assert copy is not None
    return user_id, copy


def written_since(engine: Engine, user_id: int) -> None:
    """Another transaction changes the row after the copy was loaded."""
    with Session(engine) as other:
        other.execute(update(User).where(User.id == user_id).values(name="written since"))
        other.commit()


def test_merge_overwriting_a_change_of_this_transaction_is_reported(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, user_id)  # line:load
        assert user is not None
        user.name = "renamed here"
        session.merge(User(id=user_id, name="from the payload"))  # line:merge
        session.commit()
        assert user.name == "from the payload"
    finding = one(uow.findings, "SQD162")
    here = relative(__file__)
    assert (finding.location.path, finding.location.line) == (here, line_of("merge"))
    assert finding.message == (
        "merge() onto a User this session already held: it overwrote this transaction's "
        f"change to User.name with the merged object's value — {CHANGED_FIX}"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("load"), "the session loaded the User here")
    ]
    assert finding.details["changed"] == ["name"]
    assert finding.fix_hint == "obj = session.get(User, ...); set its attributes"
    assert "payload" not in repr(finding), "attribute values are user data"


@pytest.mark.parametrize("flush_first", [False, True], ids=["no-autoflush", "flushed"])
def test_a_change_flushed_or_not_is_still_this_transactions(
    engine: Engine, flush_first: bool
) -> None:
    user_id = first_user_id(engine)
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine, autoflush=False) as session,
    ):
        user = session.get(User, user_id)
        assert user is not None
        user.name = "renamed here"
        if flush_first:
            session.flush()
        session.merge(User(id=user_id, name="from the payload"))  # line:merge-kept
        session.commit()
    finding = one(uow.findings, "SQD162")
    assert finding.location.line == line_of("merge-kept")
    assert finding.details["changed"] == ["name"]


def test_a_class_name_starting_with_a_vowel_takes_an(engine: Engine) -> None:
    read_models.create_and_seed(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        order = session.scalars(select(Order).order_by(Order.id)).first()
        assert order is not None
        order.total = 41
        session.merge(Order(id=order.id, total=42))
        session.commit()
    message = one(uow.findings, "SQD162").message
    assert message.startswith("merge() onto an Order this session already held: it overwrote")


def test_a_detached_copy_older_than_the_held_row_is_reported(engine: Engine) -> None:
    user_id, copy = detached_copy(engine)
    written_since(engine, user_id)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        held = session.get(User, user_id)  # line:fresh
        assert held is not None
        assert held.name == "written since"
        session.merge(copy)  # line:merge-stale
        session.commit()
        assert held.name != "written since"  # the other transaction's write was reverted
    finding = one(uow.findings, "SQD162")
    assert finding.location.line == line_of("merge-stale")
    assert finding.message == (
        "merge() onto a User this session already held: it wrote back User.name as a "
        "detached copy had it when it was loaded, older than the value this session "
        "loaded — reload the User in this session (session.get() returns the one it "
        "holds) and apply the intended changes to it, or refresh the detached copy before "
        "changing and merging it"
    )
    assert [r.location.line for r in finding.related] == [line_of("fresh")]


def test_a_cascade_overwriting_a_related_change_is_reported(engine: Engine) -> None:
    with Session(engine) as setup:
        post = setup.scalars(select(Post).order_by(Post.id)).first()
        assert post is not None
        post_id, author_id, title = post.id, post.author_id, post.title
        comment_id = post.comments[0].id
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        comment = session.get(Comment, comment_id)
        assert comment is not None
        comment.body = "edited here"
        incoming = Post(
            id=post_id,
            title=title,
            author_id=author_id,
            comments=[Comment(id=comment_id, body="from the payload", post_id=post_id)],
        )
        session.merge(incoming)  # line:merge-cascade
        session.commit()
    finding = one(uow.findings, "SQD162")
    assert finding.location.line == line_of("merge-cascade")
    assert "change to Comment.body" in finding.message


def test_one_finding_for_a_loop_of_merges(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        for user in users:
            user.name = f"{user.name} edited"
        for user in users:
            session.merge(User(id=user.id, name="payload"))  # line:merge-loop
        session.commit()
    assert one(uow.findings, "SQD162").location.line == line_of("merge-loop")


async def test_async_merge_overwriting_a_change_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = (await session.scalars(select(User).order_by(User.id))).first()  # line:aload
        assert user is not None
        user.name = "renamed here"
        await session.merge(User(id=user.id, name="from the payload"))  # line:amerge
        await session.commit()
    finding = one(uow.findings, "SQD162")
    assert finding.location.line == line_of("amerge")
    assert [r.location.line for r in finding.related] == [line_of("aload")]
    assert finding.fix_hint == "obj = await session.get(User, ...); set its attributes"


async def test_async_setting_the_held_object_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = (await session.scalars(select(User).order_by(User.id))).first()
        assert user is not None
        user.name = "renamed here"
        user.bio = "from the payload"
        await session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_a_change_before_a_rolled_back_savepoint_is_still_this_transactions(
    engine: Engine,
) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        user.name = "renamed before the savepoint"
        session.flush()
        savepoint = session.begin_nested()
        user.bio = "written in the savepoint"
        session.flush()
        savepoint.rollback()
        session.merge(User(id=user_id, name="from the payload", bio="from the payload"))
        session.commit()
    assert one(uow.findings, "SQD162").details["changed"] == ["name"]


# -- near misses --------------------------------------------------------------------------


def test_a_change_rolled_back_with_its_savepoint_is_silent(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        with session.begin_nested() as savepoint:
            user.name = "tried in a savepoint"
            session.flush()
            savepoint.rollback()
        session.merge(User(id=user_id, name="from the payload"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_a_change_released_with_its_savepoint_is_this_transactions(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        with session.begin_nested():
            user.name = "kept from a savepoint"
        with session.begin_nested() as savepoint:
            user.bio = "tried in a savepoint"
            session.flush()
            savepoint.rollback()
        session.merge(User(id=user_id, name="from the payload", bio="from the payload"))
        session.commit()
    assert one(uow.findings, "SQD162").details["changed"] == ["name"]


def test_a_copy_another_session_wrote_after_this_one_loaded_is_silent(engine: Engine) -> None:
    # The copy was loaded first, but its session edited and committed the row after this
    # session loaded it: merging it writes the newer values, not stale ones.
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        with Session(engine, expire_on_commit=False) as other:
            copy = other.get(User, user_id)
            assert copy is not None
            held = session.get(User, user_id)
            copy.name = "edited and committed elsewhere"
            other.commit()
        session.merge(copy)
        assert held is not None
        assert held.name == "edited and committed elsewhere"
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_merge_that_loads_the_row_itself_is_silent(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.merge(User(id=user_id, name="from the payload"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_merge_of_a_payload_onto_an_unchanged_held_row_is_silent(engine: Engine) -> None:
    # Loaded to check it exists, then updated from the request: merge()'s intended use.
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert session.get(User, user_id) is not None
        session.merge(User(id=user_id, name="from the payload"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_merge_of_only_the_owned_attributes_is_silent(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        user.bio = "changed here"
        session.merge(User(id=user_id, name="from the payload"))  # bio not set on it
        session.commit()
        assert user.bio == "changed here"
    assert not of_code(uow.findings, "SQD162")


def test_merge_with_the_same_values_is_silent(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        user.name = "renamed here"
        session.merge(User(id=user_id, name="renamed here"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_a_detached_copy_the_program_changed_is_silent(engine: Engine) -> None:
    # Detach, edit, merge back: the copy's changed attributes are the intended update.
    user_id, copy = detached_copy(engine)
    copy.name = "edited while detached"
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert session.get(User, user_id) is not None
        session.merge(copy)
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_a_detached_copy_merged_where_the_row_is_not_held_is_silent(engine: Engine) -> None:
    user_id, copy = detached_copy(engine)
    written_since(engine, user_id)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.merge(copy)
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_a_change_committed_before_the_merge_is_silent(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine, expire_on_commit=False) as session,
    ):
        user = session.get(User, user_id)
        assert user is not None
        user.name = "renamed and committed"
        session.commit()
        session.merge(User(id=user_id, name="from the payload"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_plain_assignments_are_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)):
            user.name = f"{user.name}!"
        session.add(User(name="new"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")


def test_an_import_loop_of_merges_that_load_their_rows_is_silent(engine: Engine) -> None:
    # Each merge() autoflushes the previous one's update and loads its own row; nothing
    # keeps the merged objects, so a new one often lands at a dead one's address.
    with Session(engine) as setup:
        setup.add_all([User(id=7000 + i, name=f"imported {i}") for i in range(30)])
        setup.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for i in range(30):
            session.merge(User(id=7000 + i, name=f"updated {i}"))
        session.commit()
    assert not of_code(uow.findings, "SQD162")
