"""SQD902: a ``# noqa`` that suppresses nothing."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid


class UnusedNoqa(Rule):
    """
    ## What it does
    Checks for `# noqa` comments naming sqla-doctor rules that no longer fire on their
    line.

    ## Why is this bad?
    A stale suppression hides the next real finding on that line and tells readers a
    problem exists where none does. Suppressions should rot loudly, not silently.

    ## Example
    ```python
    session.execute(select(User))  # noqa: SQD301
    ```

    Use instead:
    ```python
    session.execute(select(User))
    ```
    """

    code = "SQD902"
    name = "unused-noqa"
    pitfalls = ()
    severity = Severity.INFO
    message = "unused `noqa` for {codes}"

    VALID = (
        Valid("x = 1\n"),
        Valid("x = 1  # noqa: E501\n"),
    )
    INVALID = (Invalid("x = 1  # noqa: SQD902, unparsable-file\n", line=1),)
