"""SQD903: a file whose analysis exceeded the per-file time limit."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Rule, Valid


class AnalysisTimeout(Rule):
    """
    ## What it does
    Reports a file whose analysis took longer than the per-file time limit
    (`file-timeout` in `[tool.sqla-doctor]`, 20 seconds by default). The file's other
    findings are dropped and the run goes on with the next file.

    ## Why is this bad?
    Nothing in that file was fully checked. Huge generated modules are the usual cause;
    exclude them, or raise the limit if the file matters.

    ## Example
    ```python
    # a 50 MB generated module
    DATA = [...]
    ```

    Use instead:
    ```toml
    [tool.sqla-doctor]
    extend-exclude = ["generated/"]
    ```

    ## Options
    - `file-timeout`: seconds per file (0 turns the limit off).
    """

    code = "SQD903"
    name = "analysis-timeout"
    pitfalls = ()
    severity = Severity.WARNING
    message = "analysis took longer than {seconds:g}s and was stopped; this file is unchecked"

    VALID = (Valid("x = 1\n"),)
