"""``python -m mriscribe``: the same as the ``mriscribe`` command."""

from mriscribe.cli import main

raise SystemExit(main())
