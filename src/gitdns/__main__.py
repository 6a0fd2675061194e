"""`python -m gitdns` runs the command line."""

from gitdns.cli import main

raise SystemExit(main())
