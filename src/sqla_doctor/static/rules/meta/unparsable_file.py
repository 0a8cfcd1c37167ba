"""SQD901: a file that cannot be read, decoded or parsed."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid


class UnparsableFile(Rule):
    """
    ## What it does
    Reports a file that sqla-doctor cannot read, decode (its bytes do not match its
    declared encoding, UTF-8 by default) or parse as Python.

    ## Why is this bad?
    Nothing in such a file is checked, so its pitfalls go unseen. Python itself would
    refuse to import it. The run goes on with the other files.

    sqla-doctor parses with the Python it runs on, and the message names that version: a
    project written for a newer Python (`except A, B:` is 3.14, `def f[T]()` 3.12) needs
    sqla-doctor installed in that Python.

    ## Example
    ```python
    def broken(:
        pass
    ```

    Use instead:
    ```python
    def fixed():
        pass
    ```
    """

    code = "SQD901"
    name = "unparsable-file"
    pitfalls = ()
    severity = Severity.ERROR
    message = "{reason}"

    VALID = (Valid("x = 1\n"),)
    INVALID = (
        Invalid("def broken(:\n    pass\n", line=1),
        Invalid("x = (\n", line=1),
    )
