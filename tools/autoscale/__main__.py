"""The autoscaler of the app tier: one decision per interval, from each app host's
CPU in Graphite, acted on through Ansible (docs/capacity.md "Autoscaling").

    make autoscale                 # .venv/bin/python -m tools.autoscale
    make autoscale DRY_RUN=1       # decisions printed, nothing done, no lock taken
    .venv/bin/python -m tools.autoscale --set autoscale_interval_seconds=10   # a setting for this run

Settings (autoscale_*) and the pool (group app_pool) come from the inventory:
-i inventory/lab -i inventory/lab/scaleout.yml unless --inventory is given.
Each decision is logged as one JSON line with its inputs, and sent to StatsD as
gauges turnomatic.autoscale.{hosts,desired,decision,utilisation}. Exit status 75
when another autoscaler holds the lock.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import statsd

from . import graphite
from .actuate import Actuator, Ansible, PlaybookFailed
from .decide import Decision, Policy, decide
from .state import Lock, LockBusy, Store

log = logging.getLogger("autoscale")
LOCK_BUSY = 75   # EX_TEMPFAIL: try again later
DEFAULT_INVENTORIES = ["inventory/lab", "inventory/lab/scaleout.yml"]


@dataclass(frozen=True)
class Config:
    policy: Policy
    interval: float
    window: int
    min_points: int
    base: tuple[str, ...]          # app hosts always in service
    pool: tuple[str, ...]          # app hosts the autoscaler boots and stops, in this order
    cores: dict
    graphite_url: str
    statsd: str
    state_dir: Path
    provision_playbook: str
    deprovision_playbook: str

    @classmethod
    def from_inventory(cls, answer: dict) -> "Config":
        s = answer["settings"]
        pool = tuple(answer["pool"])
        base = tuple(h for h in answer["app"] if h not in pool)
        policy = Policy(target=float(s["autoscale_target"]), tolerance=float(s["autoscale_tolerance"]),
                        min_hosts=int(s["autoscale_min_hosts"]), max_hosts=int(s["autoscale_max_hosts"]),
                        max_step=int(s["autoscale_max_step"]), warmup_seconds=float(s["autoscale_warmup_seconds"]),
                        stabilization_seconds=float(s["autoscale_stabilization_seconds"]))
        if not base or policy.min_hosts < len(base) or policy.max_hosts > len(base) + len(pool):
            raise SystemExit(f"autoscale_min_hosts/max_hosts ({policy.min_hosts}, {policy.max_hosts}) must lie "
                             f"within {len(base)} app hosts outside app_pool and {len(base) + len(pool)} in all")
        return cls(policy=policy, interval=float(s["autoscale_interval_seconds"]),
                   window=int(s["autoscale_window_seconds"]), min_points=int(s["autoscale_min_points"]),
                   base=base, pool=pool, cores={h: float(c) for h, c in answer["cores"].items()},
                   graphite_url=s["autoscale_graphite_url"], statsd=s["autoscale_statsd"],
                   state_dir=Path(s["autoscale_state_dir"]),
                   provision_playbook=s["autoscale_provision_playbook"],
                   deprovision_playbook=s["autoscale_deprovision_playbook"])


class Autoscaler:
    def __init__(self, config: Config, actuator, read_utilisation, metrics, dry_run: bool,
                 clock=time.time, sleep=time.sleep):
        """read_utilisation(hosts) -> ({host: utilisation or None}, raw series);
        metrics: a statsd client (gauge); actuator: scale_out/scale_in(host, in_service)."""
        self.config = config
        self.actuator = actuator
        self.read_utilisation = read_utilisation
        self.metrics = metrics
        self.dry_run = dry_run
        self.clock = clock
        self.sleep = sleep
        self.store = Store(config.state_dir)
        self.history = ()   # recommendations of a dry run, which writes nothing

    def in_service(self, state: dict) -> dict[str, float]:
        # The base hosts have always been in service: never warming.
        return {**dict.fromkeys(self.config.base, 0.0), **state["pool_in_service"]}

    def recover(self) -> None:
        """Finish or roll back the action a previous run left in the journal."""
        pending = self.store.pending()
        if pending is None:
            return
        state = self.store.load()
        host = pending["host"]
        if pending["action"] == "out" and host in state["pool_in_service"]:
            log.info("journal: the scale-out of %s had finished; closing it", host)
        else:
            what = "rolling back the scale-out" if pending["action"] == "out" else "finishing the scale-in"
            log.warning("journal: %s of %s (begun %s)", what, host, pending["started"])
            remaining = sorted(h for h in self.in_service(state) if h != host)
            self.actuator.scale_in(host, remaining)
            state["pool_in_service"].pop(host, None)
            self.store.save(state)
        self.store.end()

    def decide_once(self) -> Decision:
        state = self.store.load()
        in_service = self.in_service(state)
        now = self.clock()
        try:
            utilisation, _series = self.read_utilisation(sorted(in_service))
        except OSError as error:   # Graphite unreachable or answering an error: no data at all
            log.warning("graphite: %s", error)
            utilisation = {}
        history = self.history if self.dry_run else tuple(tuple(entry) for entry in state["history"])
        decision = decide(self.config.policy, now, in_service, utilisation, history)
        log.info(json.dumps({
            "time": round(now, 1), "dry_run": self.dry_run, "action": decision.action, "current": decision.current,
            "desired": decision.desired, "recommendation": decision.recommendation,
            "observed": None if decision.observed is None else round(decision.observed, 4),
            "target": self.config.policy.target, "reason": decision.reason, "warming": decision.warming,
            "utilisation": {h: None if v is None else round(v, 4) for h, v in utilisation.items()}}))
        self.send_metrics(decision)
        if self.dry_run:
            self.history = decision.history
        else:
            state["history"] = decision.history
            self.store.save(state)
            self.act(decision, state, in_service)
        return decision

    def act(self, decision: Decision, state: dict, in_service: dict) -> None:
        for _ in range(abs(decision.desired - decision.current)):
            if decision.action == "out":
                free = [h for h in self.config.pool if h not in state["pool_in_service"]]
                host = free[0]
                self.store.begin({"action": "out", "host": host, "started": self.clock()})
                self.actuator.scale_out(host, sorted([*self.in_service(state), host]))
                state["pool_in_service"][host] = self.clock()   # its warm-up starts once it takes requests
            else:
                # The newest pool host leaves first.
                host = max(state["pool_in_service"], key=state["pool_in_service"].get)
                self.store.begin({"action": "in", "host": host, "started": self.clock()})
                self.actuator.scale_in(host, sorted(h for h in self.in_service(state) if h != host))
                del state["pool_in_service"][host]
            self.store.save(state)
            self.store.end()
            # When the host count changed, for whoever reads the log (tools/autoscale/proof.py).
            log.info(json.dumps({"time": round(self.clock(), 1), "done": decision.action, "host": host,
                                 "hosts": len(self.in_service(state))}))

    def send_metrics(self, decision: Decision) -> None:
        pipeline = self.metrics.pipeline()
        pipeline.gauge("hosts", decision.current)
        pipeline.gauge("desired", decision.desired)
        pipeline.gauge("decision", decision.desired - decision.current)
        if decision.observed is not None:
            pipeline.gauge("utilisation", round(decision.observed * 100, 1))
        pipeline.send()

    def run(self, decisions: int | None = None) -> int:
        """One decision per interval, `decisions` times (None: until stopped)."""
        count = 0
        while decisions is None or count < decisions:
            started = self.clock()
            try:
                if not self.dry_run:
                    self.recover()
                elif self.store.pending():
                    log.warning("journal: an unfinished action %s; the next run that acts deals with it",
                                json.dumps(self.store.pending()))
                self.decide_once()
            except PlaybookFailed as failure:
                # The journal stays: the next interval rolls the action back or finishes it.
                log.error("%s", failure)
            count += 1
            if decisions is None or count < decisions:
                self.sleep(max(0.0, started + self.config.interval - self.clock()))
        return 0


def main(argv=None, build_actuator=None, read_utilisation=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the decisions, act on none, take no lock")
    parser.add_argument("--inventory", "-i", action="append", help="inventory sources (repeatable)")
    parser.add_argument("--decisions", type=int, help="stop after this many decisions (default: run until stopped)")
    parser.add_argument("--set", action="append", default=[], metavar="VARIABLE=VALUE",
                        help="a variable over the inventory's for this run, settings and playbooks alike "
                             "(an Ansible extra variable; repeatable)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.set):
        parser.error("--set takes VARIABLE=VALUE")
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ansible = Ansible(args.inventory or DEFAULT_INVENTORIES, dict(item.split("=", 1) for item in args.set))
    answer = ansible.settings()
    config = Config.from_inventory(answer)
    if not args.dry_run:
        try:
            Lock(config.state_dir).acquire()
        except LockBusy as busy:
            print(f"autoscale: {busy}", file=sys.stderr)
            return LOCK_BUSY
    ansible.runner_dir = config.state_dir / "runner"
    actuator = (build_actuator or Actuator)(ansible, config.provision_playbook, config.deprovision_playbook)
    if read_utilisation is None:
        def read_utilisation(hosts):
            return graphite.app_utilisation(config.graphite_url, hosts, config.cores, config.window,
                                            config.min_points)
    host, port = config.statsd.rsplit(":", 1)
    metrics = statsd.StatsClient(host, int(port), prefix="turnomatic.autoscale")
    log.info("autoscaler%s: app hosts %s always in service, pool %s, state in %s", " (dry run)" * args.dry_run,
             ", ".join(config.base), ", ".join(config.pool), config.state_dir)
    try:
        return Autoscaler(config, actuator, read_utilisation, metrics, args.dry_run).run(args.decisions)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
