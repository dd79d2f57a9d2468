"""Figures a lab suite measures, kept in a JSON file under tests/output for the docs."""

import json


def record_figure(path, name, value):
    """Add or replace one figure in the JSON file at path, and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"{name}: {value}")
