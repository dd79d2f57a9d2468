"""The autoscaler (tools/autoscale) on loopback: an inventory of its own."""

import yaml

# What the loopback tests share; each passes the rest (bounds, windows, Graphite, StatsD, state).
DEFAULTS = {"target": 0.6, "tolerance": 0.1, "min_hosts": 2, "max_step": 1, "interval_seconds": 1, "min_points": 3}


def write_inventory(path, hosts, pool, **settings):
    """An inventory at `path`: `hosts` in group app, all at 127.0.0.1, those of `pool` in
    app_pool too; DEFAULTS and `settings` as autoscale_* variables (`settings` win)."""
    path.write_text(yaml.safe_dump({"all": {
        "children": {"app": {"hosts": {host: {"ansible_host": "127.0.0.1"} for host in hosts}},
                     "app_pool": {"hosts": dict.fromkeys(pool)}},
        "vars": {f"autoscale_{name}": value for name, value in {**DEFAULTS, **settings}.items()}}}))
    return path
