"""`python -m elsewhere` is the `elsewhere` command."""

from elsewhere.control.cli import main

raise SystemExit(main())
