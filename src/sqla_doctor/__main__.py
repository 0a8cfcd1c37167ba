"""``python -m sqla_doctor`` is the ``sqla-doctor`` command."""

from sqla_doctor.cli import main

raise SystemExit(main())
