"""SQD152 on the shapes request handlers take: a changed object only the session holds,
and the error paths that drop their writes on purpose."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sqla_doctor

from .models import User
from .support import line_of, one


def rename_first_user(session: Session) -> None:
    # The handler keeps no reference to the object it changed: once close() detaches
    # it, nothing but the garbage collector holds it.
    user = session.scalars(select(User).order_by(User.id)).first()
    assert user is not None
    user.name = "renamed"


def test_a_change_only_the_session_held_is_reported_at_remove(engine: Engine) -> None:
    db = scoped_session(sessionmaker(engine))
    with sqla_doctor.track(mode="collect") as uow:
        rename_first_user(db())
        db.remove()  # line:remove
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("remove")
    assert "changes to 1 User were never written" in finding.message


def test_a_change_only_the_session_held_is_reported_at_the_end_of_with(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:  # line:with
        rename_first_user(session)
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("with")
    assert "changes to 1 User were never written" in finding.message


def test_the_committed_twin_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        rename_first_user(session)
        session.commit()
    assert not uow.findings


def test_a_with_block_left_by_an_exception_drops_its_writes_on_purpose(engine: Engine) -> None:
    def create(name: str) -> None:
        with Session(engine) as session:
            session.add(User(name=name))
            if not name:
                raise ValueError("a name is required")
            session.commit()

    with sqla_doctor.track(mode="collect") as uow:
        create("ada")
        with pytest.raises(ValueError, match="required"):
            create("")
    assert not uow.findings


def test_a_close_in_an_except_block_drops_its_writes_on_purpose(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        try:
            session.add(User(name="ada"))
            session.flush()
            raise RuntimeError("payment declined")
        except RuntimeError:
            session.close()
    assert not uow.findings


def test_changes_thrown_away_by_expunge_all_then_a_commit_are_not_a_close(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        rename_first_user(session)
        session.expunge_all()
        session.commit()
        session.close()
    assert not uow.findings
