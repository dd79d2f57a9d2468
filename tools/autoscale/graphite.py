"""The autoscaler's input: each app host's CPU from Graphite's render API.

collectd's processes plugin reports the CPU time of the turnomatic processes of
each host, `collectd.<host>.processes-turnomatic.ps_cputime.{user,syst}`, in
microseconds per second (docs/monitoring.md). Their sum ÷ 10^6 is the cores the
service uses; divided by the cores the host has for it (its CPU share), that is
the host's utilisation, 1.0 = saturated. The machine-wide `cpu` plugin is of no
use here: inside a container it reports the machine it runs on.

Graphite answers a point it has no value for with null, and leaves a host it has
no metric for out of the answer; both are missing data, never zero.
"""

import json
import urllib.parse
import urllib.request

SERIES = "collectd.{hosts}.processes-turnomatic.ps_cputime.{{user,syst}}"
MICROSECONDS = 1_000_000


def render(url: str, target: str, window_seconds: int, timeout: float = 10) -> list[dict]:
    """The render API's JSON for one target over the last window."""
    query = urllib.parse.urlencode({"target": target, "from": f"-{window_seconds}s", "until": "now",
                                    "format": "json"})
    with urllib.request.urlopen(f"{url}/render?{query}", timeout=timeout) as answer:
        return json.load(answer)


def host_cpu_series(answer: list[dict], hosts: list[str]) -> dict[str, list[tuple[int, float | None]]]:
    """host -> [(time, cores used or None)] from a render answer of SERIES: user + syst
    per timestamp, None where either is null or absent."""
    parts: dict[str, dict[str, dict[int, float | None]]] = {}
    for series in answer:
        node = series["target"].split(".")
        parts.setdefault(node[1], {})[node[-1]] = {t: v for v, t in series["datapoints"]}
    result = {}
    for host in hosts:
        user, syst = (parts.get(host, {}).get(kind) for kind in ("user", "syst"))
        if user is None or syst is None:
            result[host] = []
            continue
        result[host] = [(t, None if user[t] is None or syst.get(t) is None else (user[t] + syst[t]) / MICROSECONDS)
                        for t in sorted(user)]
    return result


def utilisation(series: list[tuple[int, float | None]], cores: float, min_points: int) -> float | None:
    """The mean over the window of the cores used ÷ the host's cores; None (missing)
    unless at least min_points points have a value (the newest point of a render
    answer is often null: its interval is not over yet)."""
    values = [v for _, v in series if v is not None]
    if len(values) < min_points:
        return None
    return sum(values) / len(values) / cores


def app_utilisation(url: str, hosts: list[str], cores: dict[str, float], window_seconds: int,
                    min_points: int) -> tuple[dict[str, float | None], dict[str, list]]:
    """(host -> utilisation or None, the per-host series it came from) for these hosts."""
    answer = render(url, SERIES.format(hosts="{" + ",".join(hosts) + "}"), window_seconds)
    series = host_cpu_series(answer, hosts)
    return {h: utilisation(series[h], cores[h], min_points) for h in hosts}, series
