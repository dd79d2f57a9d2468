"""turnomatic's test suites. A package so that the suites and the tools import their
helpers as `tests.support.<module>` (pytest.ini puts the repository root on sys.path)."""
