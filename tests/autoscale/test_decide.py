"""The decision function on worked examples and recorded-style series.

The HPA's own examples are from the Kubernetes documentation ("Horizontal Pod
Autoscaling", Algorithm details, and the HorizontalPodAutoscaler walkthrough) and
from KEP-853 (configurable scale velocity: the stabilisation window's example).
The lab series use the figures of docs/capacity.md: an app VM capped at 25 % of a
core, about 0.8 ms of CPU per request, saturated at 150–250 req/s.
"""
import math

import pytest

from tools.autoscale.decide import Policy, decide

T0 = 1_000_000.0


def steady(hosts, since=T0 - 3600):
    return {h: since for h in hosts}


def at(hosts, value):
    return {h: value for h in hosts}


# Kubernetes docs, Algorithm details: "if the current metric value is 200m, and the desired
# value is 100m, the number of replicas will be doubled"; "50m ... halved".
def test_hpa_documentation_doubles_at_twice_the_target():
    policy = Policy(target=0.100, min_hosts=1, max_hosts=20, max_step=10)
    hosts = ["a", "b", "c"]
    decision = decide(policy, T0, steady(hosts), at(hosts, 0.200))
    assert (decision.recommendation, decision.desired, decision.action) == (6, 6, "out")


def test_hpa_documentation_halves_at_half_the_target():
    policy = Policy(target=0.100, min_hosts=1, max_hosts=20, max_step=10, stabilization_seconds=0)
    hosts = ["a", "b", "c", "d"]
    decision = decide(policy, T0, steady(hosts), at(hosts, 0.050))
    assert (decision.recommendation, decision.desired, decision.action) == (2, 2, "in")


# The HPA walkthrough: one replica at 305 % of its CPU request, target 50 %: 7 replicas.
def test_hpa_walkthrough_one_replica_at_305_percent_becomes_seven():
    policy = Policy(target=0.50, min_hosts=1, max_hosts=10, max_step=10)
    decision = decide(policy, T0, steady(["php-apache"]), {"php-apache": 3.05})
    assert decision.desired == 7 == math.ceil(1 * 3.05 / 0.50)


# KEP-853's stabilisation example: 10 replicas, one decision a minute, a 600 s window;
# recommendations 10, 9, 8, 9, 9, 8, 9, 8, 9, 8 keep 10; then 7 arrives, the first 10
# leaves the window, and the highest left, 9, is taken.
def test_kep_853_stabilisation_window_example():
    policy = Policy(target=0.5, min_hosts=1, max_hosts=20, stabilization_seconds=600, max_step=5)
    hosts = [f"h{i}" for i in range(10)]
    # Utilisations whose recommendation (ceil(10 × u / 0.5)) is 10, 9, 8, 7, each outside the tolerance but 10.
    utilisation_for = {10: 0.5, 9: 0.44, 8: 0.39, 7: 0.34}
    history = ()
    for minute, wanted in enumerate([10, 9, 8, 9, 9, 8, 9, 8, 9, 8]):
        decision = decide(policy, T0 + 60 * minute, steady(hosts), at(hosts, utilisation_for[wanted]), history)
        assert decision.recommendation == wanted
        assert decision.desired == 10, f"minute {minute}: {decision.reason}"
        history = decision.history
    decision = decide(policy, T0 + 600, steady(hosts), at(hosts, utilisation_for[7]), history)
    assert (decision.recommendation, decision.desired) == (7, 9)


def test_no_action_inside_the_tolerance_band():
    policy = Policy(target=0.6, min_hosts=1, max_hosts=10)
    hosts = ["app1", "app2", "app3", "app4"]
    # 1.09 × the target: ceil(4 × 1.09) would be 5 without the band.
    assert decide(policy, T0, steady(hosts), at(hosts, 0.6 * 1.09)).desired == 4
    # 1.11 × the target: outside, one more host.
    assert decide(policy, T0, steady(hosts), at(hosts, 0.6 * 1.11)).desired == 5
    # Downwards: 20 hosts at 0.91 × the target would be ceil(18.2) = 19 without the band.
    policy = Policy(target=0.6, min_hosts=1, max_hosts=30, stabilization_seconds=0)
    hosts = [f"app{i}" for i in range(20)]
    assert decide(policy, T0, steady(hosts), at(hosts, 0.6 * 0.91)).desired == 20
    assert decide(policy, T0, steady(hosts), at(hosts, 0.6 * 0.89)).desired == 19


@pytest.mark.parametrize("utilisation", [
    {"app1": 0.95, "app2": None},          # a null point: no figure for app2
    {"app1": 0.95},                        # app2 absent from the render answer
    {"app1": 0.95, "app2": float("nan")},
])
def test_missing_data_never_scales(utilisation):
    policy = Policy(target=0.6, min_hosts=1, max_hosts=10, stabilization_seconds=0)
    decision = decide(policy, T0, steady(["app1", "app2"]), utilisation)
    assert (decision.desired, decision.recommendation) == (2, None)
    assert "no data from app2" in decision.reason
    # Nor in: a host without data may be the busiest one.
    low = {h: (0.05 if h == "app1" else v) for h, v in utilisation.items()}
    assert decide(policy, T0, steady(["app1", "app2"]), low).desired == 2


def test_a_host_in_its_warm_up_is_not_measured():
    policy = Policy(target=0.6, min_hosts=1, max_hosts=10, warmup_seconds=60)
    in_service = {"app1": T0 - 3600, "app2": T0 - 3600, "app3": T0 - 20}
    # app3 burns CPU while it starts (or shows nothing yet): neither counts.
    for boot_figure in (1.0, None):
        decision = decide(policy, T0, in_service, {"app1": 0.6, "app2": 0.6, "app3": boot_figure})
        assert (decision.measured, decision.warming, decision.desired) == (("app1", "app2"), ("app3",), 3)
    # After its warm-up it is measured like the others (and its missing figure blocks decisions).
    decision = decide(policy, T0 + 60, in_service, {"app1": 0.6, "app2": 0.6, "app3": 1.0})
    assert decision.measured == ("app1", "app2", "app3") and decision.desired == 4


def test_warming_hosts_count_as_idle_so_one_burst_adds_hosts_once():
    """2 hosts at 1.5× the target asked for 3; while the 3rd warms, the same figures on
    the 2 old hosts must not ask for ceil(3 × 1.5) = 5."""
    policy = Policy(target=0.6, min_hosts=1, max_hosts=10, warmup_seconds=60, max_step=4)
    decision = decide(policy, T0, steady(["app1", "app2"]), at(["app1", "app2"], 0.9))
    assert decision.desired == 3
    in_service = {**steady(["app1", "app2"]), "app3": T0 + 10}
    decision = decide(policy, T0 + 15, in_service, at(["app1", "app2"], 0.9), decision.history)
    assert decision.desired == 3, decision.reason


def test_scale_out_is_immediate_even_after_a_quiet_window():
    policy = Policy(target=0.6, min_hosts=2, max_hosts=4, stabilization_seconds=300)
    hosts = ["app1", "app2"]
    history = ()
    for second in range(0, 300, 15):
        history = decide(policy, T0 + second, steady(hosts), at(hosts, 0.3), history).history
    assert decide(policy, T0 + 300, steady(hosts), at(hosts, 0.9), history).desired == 3


def test_bounded_by_min_and_max_hosts():
    policy = Policy(target=0.6, min_hosts=2, max_hosts=4, stabilization_seconds=0, max_step=10)
    assert decide(policy, T0, steady(["a", "b", "c", "d"]), at("abcd", 3.0)).desired == 4
    assert decide(policy, T0, steady(["a", "b", "c", "d"]), at("abcd", 0.01)).desired == 2
    assert decide(policy, T0, steady(["a"]), at("a", 0.6)).desired == 2


def test_at_most_max_step_hosts_per_decision():
    policy = Policy(target=0.6, min_hosts=1, max_hosts=10, stabilization_seconds=0, max_step=1)
    assert decide(policy, T0, steady(["a", "b"]), at("ab", 3.0)).desired == 3
    assert decide(policy, T0, steady(["a", "b", "c", "d"]), at("abcd", 0.01)).desired == 3


def test_flapping_load_never_removes_a_host_inside_the_window():
    """A load that swings every interval between 1.5× and 0.4× the target: the fleet
    grows on the first high and stays; without the window it would add and remove a
    host every interval."""
    policy = Policy(target=0.6, min_hosts=2, max_hosts=4, warmup_seconds=30, stabilization_seconds=300)
    in_service, history, counts = steady(["app1", "app2"]), (), []
    total_load = {True: 0.9 * 2, False: 0.24 * 2}   # host-equivalents of CPU, high and low
    for step in range(20):
        now = T0 + 15 * step
        per_host = total_load[step % 2 == 0] / len(in_service)
        decision = decide(policy, now, in_service, at(in_service, per_host), history)
        history = decision.history
        if decision.desired > len(in_service):
            in_service[f"app{len(in_service) + 1}"] = now
        elif decision.desired < len(in_service):
            del in_service[max(in_service)]
        counts.append(len(in_service))
    assert counts == sorted(counts), f"the host count went down inside the window: {counts}"
    assert counts[-1] == 3


# Recorded-style series from docs/capacity.md's lab figures: 0.8 ms of CPU per request,
# app VMs capped at 25 % of a core: one VM is at 100 % of its share at about 310 req/s.
CPU_SECONDS_PER_REQUEST = 0.0008
VM_SHARE = 0.25


def simulate(policy, offered, interval=15, warm_after=45):
    """The fleet under an offered-load series (req/s per interval): a host enters
    service `warm_after` seconds after the decision that asks for it (boot, converge,
    /readyz). Returns [(t, offered, hosts, decision)]."""
    in_service, history, booting, trace = steady(["app1", "app2"]), (), [], []
    for step, rate in enumerate(offered):
        now = T0 + interval * step
        for ready_at in [b for b in booting if b <= now]:
            booting.remove(ready_at)
            in_service[f"app{len(in_service) + 1}"] = now
        per_host = min(1.0, rate * CPU_SECONDS_PER_REQUEST / len(in_service) / VM_SHARE)
        decision = decide(policy, now, in_service, at(in_service, per_host), history)
        history = decision.history
        if decision.desired > len(in_service) + len(booting):
            booting.append(now + warm_after)
        elif decision.desired < len(in_service) and not booting:
            del in_service[max(in_service)]
        trace.append((now, rate, len(in_service), decision))
    return trace


def test_lab_ramp_adds_hosts_with_the_load_and_removes_them_after_the_window():
    policy = Policy(target=0.6, min_hosts=2, max_hosts=4, warmup_seconds=60, stabilization_seconds=300)
    offered = [150] * 8 + [700] * 40 + [150] * 40     # low, above 2 VMs' 60 %, low again
    trace = simulate(policy, offered)
    hosts = [h for _, _, h, _ in trace]
    assert max(hosts[:8]) == 2
    assert hosts[47] == 4, trace[47][3].reason         # the high phase ends with 4 VMs
    last_high = T0 + 15 * 47                           # the last decision that saw the high load
    first_in = next(t for t, _, h, _ in trace if t > last_high and h < 4)
    assert first_in - last_high >= policy.stabilization_seconds
    assert hosts[-1] == 2
