"""``python -m sqla_doctor`` is the ``sqla-doctor`` command.

``python -m`` puts the current folder first on ``sys.path``: from inside the project being
checked, its ``json.py``, ``tomllib.py`` or ``sqlalchemy/`` would be imported, that is run,
in place of the real ones. The folder is taken off the path before anything else is
imported. (What Python imports before this line, ``typing`` for one, is out of reach:
inside an untrusted project use the ``sqla-doctor`` command or ``python -P -m``.)
"""

import os
import sys

if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == os.getcwd():
    del sys.path[0]

from sqla_doctor.cli import main

raise SystemExit(main())
