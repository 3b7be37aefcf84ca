"""`python -m hiertrain_edge` runs the command line."""

from hiertrain_edge.cli.main import main

raise SystemExit(main())
