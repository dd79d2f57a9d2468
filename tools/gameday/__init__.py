"""Game days on the lab fleet: failure scenarios as Chaos Toolkit experiments
(tools/gameday/experiments/), run under load from the client host, and a
timeline drafted from the fleet's own data after each (docs/incidents/README.md).

    .venv/bin/python -m tools.gameday [--scenario app-power-cut ...]
    .venv/bin/python -m tools.gameday.timeline --start ISO --end ISO [--run DIR]
"""
