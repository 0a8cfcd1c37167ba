"""SQD163: a new object added with a primary key the session already holds."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, ForeignKey, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import sqla_doctor

from . import read_models
from .models import User
from .read_models import Order
from .support import line_of, of_code, one, relative


class LinkBase(DeclarativeBase):
    pass


class Student(LinkBase):
    __tablename__ = "students"

    id: Mapped[int] = mapped_column(primary_key=True)


class Course(LinkBase):
    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)


class Enrollment(LinkBase):
    """An association object: its primary key is its two foreign keys."""

    __tablename__ = "enrollments"

    student_id: Mapped[int] = mapped_column(ForeignKey("students.id"), primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"), primary_key=True)
    grade: Mapped[str] = mapped_column(default="")
    student: Mapped[Student] = relationship()
    course: Mapped[Course] = relationship()


def seeded_links(engine: Engine) -> Engine:
    LinkBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Student(id=1), Student(id=2), Course(id=10), Course(id=20)])
        session.commit()
    return engine


def first_user_id(engine: Engine) -> int:
    with Session(engine) as session:
        user_id = session.scalars(select(User.id).order_by(User.id)).first()
    assert user_id is not None
    return user_id


# SQLAlchemy warns too, just before the INSERT fails.
@pytest.mark.filterwarnings("ignore:New instance .* conflicts with persistent instance")
def test_a_new_object_for_a_loaded_row_is_reported_before_the_flush_fails(
    engine: Engine,
) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        held = session.get(User, user_id)  # line:loaded
        assert held is not None
        session.add(User(id=user_id, name="renamed"))  # line:add
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
    finding = one(uow.findings, "SQD163")
    assert (finding.location.path, finding.location.line) == (relative(__file__), line_of("add"))
    assert finding.message == (
        "new User added with the primary key of a User this session already holds: the "
        "flush will INSERT that key twice and fail with a duplicate key — change the object "
        "the session holds instead (session.get() returns it), or session.merge() the new "
        "one to copy its values onto it"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("loaded"), "the session loaded the User here")
    ]


def test_merges_of_one_key_twice_without_autoflush_are_reported(engine: Engine) -> None:
    payload = [{"id": 9001, "name": "first"}, {"id": 9001, "name": "again"}]
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine, autoflush=False) as session,
    ):
        for row in payload:
            session.merge(User(**row))  # line:merge
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
    finding = one(uow.findings, "SQD163")
    assert finding.location.line == line_of("merge")
    assert "primary key of another new User" in finding.message
    assert "flush after each merge()" in finding.message


@pytest.mark.filterwarnings("ignore:New instance .* conflicts with persistent instance")
async def test_async_new_object_for_a_loaded_row_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = (await session.scalars(select(User).order_by(User.id))).first()
        assert user is not None
        session.add(User(id=user.id, name="renamed"))  # line:async-add
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()
    assert one(uow.findings, "SQD163").location.line == line_of("async-add")


@pytest.mark.filterwarnings("ignore:New instance .* conflicts with persistent instance")
def test_a_class_name_starting_with_a_vowel_takes_an(engine: Engine) -> None:
    read_models.create_and_seed(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        order = session.scalars(select(Order).order_by(Order.id)).first()
        assert order is not None
        session.add(Order(id=order.id, account_id=order.account_id))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
    message = one(uow.findings, "SQD163").message
    assert message.startswith("new Order added with the primary key of an Order this session")


def test_two_association_objects_keyed_by_their_relationships_are_reported(
    engine: Engine,
) -> None:
    seeded_links(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        student, course = session.get(Student, 1), session.get(Course, 10)
        session.add(Enrollment(student=student, course=course))  # line:first-link
        session.add(Enrollment(student=student, course=course, grade="A"))  # line:second-link
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
    finding = one(uow.findings, "SQD163")
    assert finding.location.line == line_of("second-link")
    assert "the primary key of another new Enrollment" in finding.message
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("first-link"), "the first new Enrollment was added here")
    ]


@pytest.mark.filterwarnings("ignore:New instance .* conflicts with persistent instance")
def test_an_association_object_for_a_held_link_is_reported_with_expired_ends(
    engine: Engine,
) -> None:
    seeded_links(engine)
    with Session(engine) as setup:
        setup.add(Enrollment(student_id=2, course_id=20))
        setup.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        held = session.get(Enrollment, (2, 20))
        student, course = session.get(Student, 2), session.get(Course, 20)
        session.commit()  # expires all three: the keys are in their identities only
        assert held is not None
        assert "student_id" not in vars(held)
        session.add(Enrollment(student=student, course=course))  # line:held-link
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
    finding = one(uow.findings, "SQD163")
    assert finding.location.line == line_of("held-link")
    assert "the primary key of an Enrollment this session already holds" in finding.message


# -- near misses --------------------------------------------------------------------------


def test_delete_then_add_of_the_same_key_is_silent(engine: Engine) -> None:
    # A row switch: SQLAlchemy UPDATEs the row instead of DELETE + INSERT.
    with Session(engine) as setup:
        lone = User(name="no posts")
        setup.add(lone)
        setup.commit()
        user_id = lone.id
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        held = session.get(User, user_id)
        session.delete(held)
        session.add(User(id=user_id, name="replacement"))
        session.commit()
    assert not of_code(uow.findings, "SQD163")


def test_new_keys_and_database_assigned_keys_are_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.scalars(select(User)).all()
        session.add_all([User(id=9100, name="explicit"), User(name="assigned")])
        session.add(User(id=8000, name="another"))
        session.commit()
    assert not of_code(uow.findings, "SQD163")


def test_merges_of_one_key_twice_with_autoflush_are_silent(engine: Engine) -> None:
    # merge() autoflushes first: the second finds the row the first one inserted.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in ("first", "again"):
            session.merge(User(id=9200, name=name))
        session.commit()
    assert not of_code(uow.findings, "SQD163")


def test_merge_onto_the_held_row_is_not_this_rule(engine: Engine) -> None:
    user_id = first_user_id(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert session.get(User, user_id) is not None
        session.merge(User(id=user_id, name="payload"))
        session.commit()
    assert not of_code(uow.findings, "SQD163")


def test_association_objects_to_different_targets_are_silent(engine: Engine) -> None:
    seeded_links(engine)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        student = session.get(Student, 1)
        courses = [session.get(Course, 10), session.get(Course, 20)]
        session.add_all([Enrollment(student=student, course=course) for course in courses])
        session.add(Enrollment(student=Student(id=3), course=courses[0]))
        session.add(Enrollment(student=Student(), course=courses[0]))
        session.add(Enrollment(student=Student(), course=courses[0]))
        session.commit()
    assert not of_code(uow.findings, "SQD163")


def test_delete_then_add_of_an_association_object_is_silent(engine: Engine) -> None:
    seeded_links(engine)
    with Session(engine) as setup:
        setup.add(Enrollment(student_id=1, course_id=10, grade="B"))
        setup.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        held = session.get(Enrollment, (1, 10))
        student, course = session.get(Student, 1), session.get(Course, 10)
        session.delete(held)
        session.add(Enrollment(student=student, course=course, grade="A"))
        session.commit()
    assert not of_code(uow.findings, "SQD163")
    with Session(engine) as check:
        assert check.scalars(select(Enrollment.grade)).all() == ["A"]
