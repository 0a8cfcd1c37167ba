"""Whether a line of the program runs for a pytest fixture.

A fixture makes sessions and connections for a test and discards them at its teardown on
purpose, so that the next test starts from the same data: SQD152 (writes lost at a
close) and SQD154 (a connection never closed) give it advice of its own or none.
"""

from __future__ import annotations

import sys
from types import FrameType

from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.generator_dependency import module_of

_PYTEST_FIXTURES = ("_pytest/fixtures.py", "_pytest\\fixtures.py")


def in_pytest_fixture(site: CallSite) -> bool:
    """Whether the line at ``site`` is in a pytest fixture's function (one defined at
    module level, found by its name in the module)."""
    module = sys.modules.get(site.module) if site.module else module_of(site.filename)
    function = module.__dict__.get(site.function) if module is not None else None
    return function is not None and (
        type(function).__name__ == "FixtureFunctionDefinition"  # pytest >= 8.4
        or hasattr(function, "_pytestfixturefunction")  # earlier
    )


def closed_by_pytest_fixture(site: CallSite) -> bool:
    """Whether the line at ``site`` is in a pytest fixture's function (``with
    Session(engine) as s: yield s``), or runs while pytest tears a fixture down (a
    ``teardown()`` the fixture handed to ``request.addfinalizer()``, a helper its code
    after ``yield`` calls): its teardown discards the test's writes on purpose, so that
    the next test starts from the same data. Asked only when a close lost writes."""
    return in_pytest_fixture(site) or _in_fixture_teardown()


def _in_fixture_teardown() -> bool:
    """Whether pytest's FixtureDef.finish(), which runs a fixture's finalizers and the
    code after its ``yield``, is on this thread's stack."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "finish" and code.co_filename.endswith(_PYTEST_FIXTURES):
            return True
        frame = frame.f_back
    return False
