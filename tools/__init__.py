"""Tools for people, not tests: the load driver and capacity runs (tools/load), the
benchmarks (tools/bench). Run them from the repository root as modules, e.g.
`.venv/bin/python -m tools.load.turnoload --help`; they share tests/support with the suites."""
