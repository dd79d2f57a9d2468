"""The autoscaler's decision: how many app hosts the fleet should have now.

A pure function of the policy, the time, the hosts in service (and since when) and
each host's observed utilisation, plus the recent recommendations it returned
before. It follows Kubernetes' Horizontal Pod Autoscaler (and AWS target
tracking), so that an operator who knows those can predict it:

    recommendation = ceil(hosts × observed / target)

where observed is the mean per-host utilisation; no change while
|observed / target − 1| <= tolerance; a host in its warm-up is not measured (when
scaling out it counts as idle, as the HPA counts a pod that is not ready; when
scaling in it is kept); a scale-out is taken at once, a scale-in only as far as
the highest recommendation of the stabilisation window allows; the result stays
within [min_hosts, max_hosts] and moves at most max_step hosts per decision.
A host of the fleet without a measurement means no decision at all: the
autoscaler never scales on missing data.
"""

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Policy:
    target: float                 # per-host utilisation aimed at (0.6: 60 % of the host's CPU)
    min_hosts: int
    max_hosts: int
    tolerance: float = 0.1        # the HPA's default
    warmup_seconds: float = 60.0
    stabilization_seconds: float = 300.0   # the HPA's default scale-down window
    max_step: int = 1

    def __post_init__(self):
        if not (self.target > 0 and 0 <= self.tolerance < 1 and 1 <= self.min_hosts <= self.max_hosts
                and self.max_step >= 1 and self.warmup_seconds >= 0 and self.stabilization_seconds >= 0):
            raise ValueError(f"inconsistent autoscaling policy: {self}")


@dataclass(frozen=True)
class Decision:
    current: int                  # hosts in service
    desired: int                  # hosts there should be after this decision
    recommendation: int | None    # what the metrics alone ask for (None: no data)
    reason: str
    observed: float | None        # mean utilisation of the measured hosts
    measured: tuple[str, ...]     # hosts whose utilisation was used
    warming: tuple[str, ...]      # hosts in their warm-up, not measured
    history: tuple[tuple[float, int], ...] = field(default=())  # (time, recommendation) to pass next time

    @property
    def action(self) -> str:
        return "out" if self.desired > self.current else "in" if self.desired < self.current else "none"


def ceil(value: float) -> int:
    # 3 × (0.2 / 0.1) is 6.000000000000001 in floating point: that is 6 hosts, not 7.
    return math.ceil(round(value, 9))


def decide(policy: Policy, now: float, in_service: dict[str, float], utilisation: dict[str, float | None],
           history: tuple[tuple[float, int], ...] = ()) -> Decision:
    """in_service: host -> the time it entered service; utilisation: host -> its observed
    utilisation over the last window (None or absent: no data); history: the `history`
    of the previous decision."""
    current = len(in_service)
    warming = tuple(sorted(h for h, since in in_service.items() if now - since < policy.warmup_seconds))
    measured = tuple(sorted(h for h in in_service if h not in warming))
    recent = tuple((t, r) for t, r in history if now - t < policy.stabilization_seconds)

    def hold(reason, observed=None):
        return Decision(current, current, None, reason, observed, measured, warming, recent)

    missing = [h for h in measured if utilisation.get(h) is None or not math.isfinite(utilisation[h])]
    if missing:
        return hold(f"no data from {', '.join(missing)}: no decision")
    if not measured:
        return hold("every host is in its warm-up: no decision")

    observed = sum(utilisation[h] for h in measured) / len(measured)
    ratio = observed / policy.target
    if abs(ratio - 1) <= policy.tolerance:
        recommendation, reason = current, f"within the tolerance ({ratio:.2f} of the target)"
    elif ratio > 1:
        # Warming hosts count as idle: their share of the load is not visible yet, and
        # counting it would add a host for load a new host already takes (the HPA's rule).
        spread = ratio * len(measured) / current
        if spread <= 1 + policy.tolerance:
            recommendation, reason = current, f"{ratio:.2f} of the target, but hosts in their warm-up will take it"
        else:
            recommendation, reason = ceil(current * spread), f"{ratio:.2f} of the target"
    else:
        # Warming hosts are kept: only the measured ones are sized.
        recommendation = ceil(len(measured) * ratio) + len(warming)
        reason = f"{ratio:.2f} of the target"

    recent = recent + ((now, recommendation),)
    if recommendation > current:
        desired = recommendation
    else:
        # Scale in only as far as every recommendation of the window allows (an old,
        # higher recommendation holds a scale-in back; it never scales out).
        desired = min(current, max(r for _, r in recent))
        if desired > recommendation:
            reason += f", scale-in held by the stabilisation window (highest {desired})"
    bounded = min(max(desired, policy.min_hosts), policy.max_hosts)
    if bounded != desired:
        reason += f", bounded to [{policy.min_hosts}, {policy.max_hosts}]"
    stepped = min(max(bounded, current - policy.max_step), current + policy.max_step)
    if stepped != bounded:
        reason += f", at most {policy.max_step} host(s) per decision"
    return Decision(current, stepped, recommendation, reason, observed, measured, warming, recent)
