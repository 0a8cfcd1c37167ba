"""Finding the user's line: classification of files and the frame walk."""

from __future__ import annotations

import asyncio
import os
import sysconfig

import sqlalchemy

import sqla_doctor
from sqla_doctor.runtime import callsite

from .support import line_of


def test_files_are_classified() -> None:
    assert callsite.classify(__file__) == callsite.USER
    assert callsite.classify(sqlalchemy.__file__) == callsite.INTERNAL
    assert callsite.classify(callsite.__file__) == callsite.INTERNAL
    assert callsite.classify(os.__file__) == callsite.INTERNAL
    purelib = sysconfig.get_paths()["purelib"]
    assert callsite.classify(os.path.join(purelib, "somepkg", "mod.py")) == callsite.THIRD_PARTY
    assert callsite.classify("<string>") == callsite.INTERNAL
    assert callsite.classify("<stdin>") == callsite.USER
    demo = os.path.join(os.path.dirname(sqla_doctor.__file__), "demo", "app.py")
    assert callsite.classify(demo) == callsite.USER


def test_find_returns_the_users_line() -> None:
    def library_like() -> callsite.CallSite | None:
        return callsite.find(0)

    site = library_like()  # line:find
    assert site is not None
    # library_like is itself user code: the innermost user frame wins.
    assert site.function == "library_like"
    site = callsite.find(0)  # line:direct
    assert site is not None
    assert site.lineno == line_of("direct")
    assert site.module == __name__


def test_the_event_loop_is_a_boundary() -> None:
    """A task with no user frame of its own has no call site, not asyncio.run()'s line."""

    async def inner() -> callsite.CallSite | None:
        return await asyncio.shield(asyncio.ensure_future(_from_library()))

    assert asyncio.run(inner()) is None


async def _from_library() -> callsite.CallSite | None:
    # Looks past this frame as if it were SQLAlchemy's.
    return callsite.find(1)


def test_an_installed_file_is_shown_as_its_import_path() -> None:
    # Messages and fingerprints must not carry one machine's venv or Python location.
    root = "/work/project"
    venv = "/home/ci/.venv/lib/python3.11/site-packages/pydantic/type_adapter.py"
    assert callsite.display_path(venv, root) == "pydantic/type_adapter.py"
    debian = "/usr/lib/python3/dist-packages/flask_sqlalchemy/extension.py"
    assert callsite.display_path(debian, root) == "flask_sqlalchemy/extension.py"
    stdlib = "/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/base_events.py"
    assert callsite.display_path(stdlib, root) == "asyncio/base_events.py"
    assert callsite.display_path("/work/project/app/views.py", root) == "app/views.py"
    assert callsite.display_path("/srv/other/app.py", root) == "/srv/other/app.py"
    # A virtualenv inside the project is no part of it.
    inside = "/work/project/.venv/lib/python3.11/site-packages/flask_sqlalchemy/extension.py"
    assert callsite.display_path(inside, root) == "flask_sqlalchemy/extension.py"
    assert callsite.display_path("/work/project/lib/site_packages.py", root) == (
        "lib/site_packages.py"
    )


def test_a_frames_sessions_are_read_without_running_a_proxys_code() -> None:
    """A thread's locals may hold a proxy such as Flask's ``current_app``, whose
    ``__class__`` runs code to find its object (and fails outside an app context):
    looking for sessions among them must not run it."""
    import sys

    from sqlalchemy.orm import Session
    from werkzeug.local import LocalProxy

    lookups: list[str] = []

    def outside_context() -> object:
        lookups.append("current_app")
        raise RuntimeError("Working outside of application context.")

    proxy = LocalProxy(outside_context)
    session = Session()
    frame = sys._getframe()
    assert proxy is not None  # a local of this frame
    assert callsite._holds_session(frame, session)
    assert not callsite._holds_other_session(frame, session)
    assert lookups == []
