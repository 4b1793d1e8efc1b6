"""``python -m streams.cli``: the ``dmtwin`` command."""

from . import main

raise SystemExit(main())
