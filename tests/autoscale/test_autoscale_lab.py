"""The autoscaler's whole cycle on the converged lab fleet: `make autoscale-proof
PROFILE=short` (tools/autoscale/proof.py; its figures in docs/capacity.md
"Autoscaling"). Load from client1 through the DNS name, low, high, low; the real
autoscaler (Graphite, ansible-runner, scale_out.yml and scale_in.yml)
adds app3 within one interval plus the warm-up, and removes it only after the
stabilisation window. Every ticket is checked (0 duplicates, no unexplained gap), no
request fails while app3 is removed, and the balancers' access logs show no request
that app3 did not answer while it was leaving (a host stopped without being drained
leaves some, even those nginx re-sent elsewhere).

Whatever happens, proof.run leaves the fleet as it found it: app3 out of both
balancers' upstreams and stopped, the app VMs' CPU caps put back."""

import pytest

from tools.autoscale import proof

pytestmark = pytest.mark.lab


def test_a_host_is_added_under_load_and_drained_out_afterwards(fleet):
    figures, problems, out = proof.run("short")
    print(f"\nautoscale cycle: {figures['wall_seconds']} s; hosts over time {figures['hosts_over_time']}; "
          f"report in {out / 'report.md'}")
    assert not problems, f"{'; '.join(problems)} (report: {out / 'report.md'})"
    assert figures["fleet_after"]["upstreams"] == {lb: figures["fleet_after"]["base"] for lb in fleet.lab.group("lb")}
    assert not figures["fleet_after"]["pool_running"]
