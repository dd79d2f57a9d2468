"""Fixtures of the game-day tests: the monitoring suite's real Graphite on
loopback and its rendered alert rules (tests/monitoring/conftest.py), shared
rather than copied."""
from tests.monitoring import conftest as monitoring

loopback_graphite = monitoring.loopback_graphite
grafana_provisioning = monitoring.grafana_provisioning
rules_file = monitoring.rules_file
