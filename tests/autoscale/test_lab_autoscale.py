"""The autoscaler on the lab fleet, the short version of `make autoscale-proof`
(tools/autoscale/proof.py, profile "short"): a load ramp from the client host
through the DNS name makes it add app3, and after the load drops and the
stabilisation window it removes it again; every ticket checked, no request failed
by the scale-in, and the fleet left with app1/app2 in the balancers and app3 stopped.
"""
import pytest

from tools.autoscale import proof

pytestmark = pytest.mark.lab


def test_the_autoscaler_adds_a_host_under_load_and_removes_it_after_the_window(fleet):
    figures, problems, out = proof.run("short", cpu_percent=proof.DEFAULT_CPU_PERCENT)
    print(f"\n{(out / 'report.md').read_text()}wall time {figures['wall_seconds']} s")
    assert not problems, f"{'; '.join(problems)} (report: {out / 'report.md'})"
