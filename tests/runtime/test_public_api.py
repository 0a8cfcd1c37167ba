"""The public names: sorted, importable, and ``import sqla_doctor`` stays cheap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import sqla_doctor
import sqla_doctor.runtime


def test_package_all_is_sorted_and_resolves() -> None:
    assert sqla_doctor.__all__ == sorted(sqla_doctor.__all__)
    for name in sqla_doctor.__all__:
        assert getattr(sqla_doctor, name) is not None, name


def test_runtime_all_is_sorted_and_resolves() -> None:
    assert sqla_doctor.runtime.__all__ == sorted(sqla_doctor.runtime.__all__)
    for name in sqla_doctor.runtime.__all__:
        assert hasattr(sqla_doctor.runtime, name), name


def test_importing_the_package_does_not_import_sqlalchemy() -> None:
    code = "import sys, sqla_doctor; print('sqlalchemy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_pytest_filterwarnings_turns_a_finding_into_a_failure(pytester: pytest.Pytester) -> None:
    """``filterwarnings = error::sqla_doctor.NPlusOneWarning`` fails the test at the line.

    (Python's own ``-W`` cannot name it: the interpreter reads -W before site-packages
    are importable.)
    """
    pytester.makeini("[pytest]\nfilterwarnings =\n    error::sqla_doctor.NPlusOneWarning\n")
    pytester.makepyfile(
        test_app=textwrap.dedent(
            """
            import sqla_doctor
            from sqlalchemy import ForeignKey, create_engine, select
            from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
                posts: Mapped[list["Post"]] = relationship()

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

            def test_listing():
                engine = create_engine("sqlite://")
                Base.metadata.create_all(engine)
                with Session(engine) as session:
                    session.add_all([User(posts=[Post()]), User(posts=[Post()])])
                    session.commit()
                with sqla_doctor.track(mode="warn"), Session(engine) as session:
                    for user in session.scalars(select(User)).all():
                        user.posts
            """
        )
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NPlusOneWarning: SQD251 User.posts lazy-loaded 2×*"])
