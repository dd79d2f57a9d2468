"""The Grafana dashboards type-check against Grafana's own schema.

`tsc --strict` checks each dashboard, written as a TypeScript object literal,
against the `Dashboard` type of the npm package @grafana/schema, and each
panel against its panel plugin's options: an unknown or mistyped key fails.
JSON has no enums, so the check first turns the schema's enum types into the
unions of their literal values (what Grafana reads from JSON).
"""
import json
import subprocess

import pytest

from tests.support.paths import REPO, ROLES

DASHBOARDS = sorted((ROLES / "grafana/files/dashboards").glob("*.json"))
# npm installs into a git-ignored directory, at these pinned versions.
TOOLS_DIR = REPO / "build/grafana-schema-check"
PACKAGES = {"typescript": "7.0.2", "@grafana/schema": "13.2.3"}

PANEL_TYPES = {
    "timeseries": ("TimeSeriesPanelCfg_types.gen", "timeseries", True),
    "stat": ("StatPanelCfg_types.gen", "stat", False),
}

PRELUDE = """\
import type {{ Dashboard, Panel, RowPanel }} from '@grafana/schema';
{imports}

// A value as JSON can hold it: string enums become their literal values.
type Json<T> = T extends string ? `${{T}}`
  : T extends number | boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Json<U>>
  : T extends object ? {{ [K in keyof T]: Json<T[K]> }}
  : T;
"""


def typescript_source(dashboard):
    imports, lines = [], []
    for name, (module, folder, has_field_config) in PANEL_TYPES.items():
        alias = name.capitalize()
        names = f"Options as {alias}Options" + (f", FieldConfig as {alias}FieldConfig" if has_field_config else "")
        imports.append(
            f"import type {{ {names} }} from "
            f"'@grafana/schema/dist/esm/raw/composable/{folder}/panelcfg/x/{module}';")
    panels = dashboard.get("panels", [])
    lines.append(f"export const dashboard: Json<Dashboard> = {json.dumps({**dashboard, 'panels': []}, indent=2)};")
    for index, panel in enumerate(panels):
        kind = panel.get("type")
        if kind == "row":
            panel_type = "Json<RowPanel>"
        elif kind in PANEL_TYPES:
            alias = kind.capitalize()
            custom = f"{alias}FieldConfig" if PANEL_TYPES[kind][2] else "Record<string, never>"
            # Panel's options are an open record in the schema: close them with the plugin's own type.
            panel_type = f"Json<Omit<Panel<{alias}Options, {custom}>, 'options'> & {{ options?: {alias}Options }}>"
        else:
            pytest.fail(f"panel {panel.get('title')!r}: no schema type known for panel type {kind!r}")
        lines.append(f"export const panel{index}: {panel_type} = {json.dumps(panel, indent=2)};")
    return PRELUDE.format(imports="\n".join(imports)) + "\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tsc():
    marker = TOOLS_DIR / "installed.json"
    if not marker.exists() or json.loads(marker.read_text()) != PACKAGES:
        TOOLS_DIR.mkdir(parents=True, exist_ok=True)
        (TOOLS_DIR / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--save-exact",
             *(f"{name}@{version}" for name, version in PACKAGES.items())],
            cwd=TOOLS_DIR, check=True, capture_output=True, text=True, timeout=300)
        marker.write_text(json.dumps(PACKAGES))
    (TOOLS_DIR / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "module": "esnext",
                            "moduleResolution": "bundler", "target": "es2022",
                            "skipLibCheck": True, "types": []},
        "include": ["check/*.ts"]}))

    def check(dashboard, name):
        check_dir = TOOLS_DIR / "check"
        check_dir.mkdir(exist_ok=True)
        for old in check_dir.glob("*.ts"):
            old.unlink()
        (check_dir / f"{name}.ts").write_text(typescript_source(dashboard))
        return subprocess.run([str(TOOLS_DIR / "node_modules/.bin/tsc"), "-p", "tsconfig.json"],
                              cwd=TOOLS_DIR, capture_output=True, text=True, timeout=300)
    return check


def test_there_are_dashboards():
    assert DASHBOARDS, "no dashboard JSON under roles/grafana/files/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_grafana_schema(tsc, path):
    result = tsc(json.loads(path.read_text()), path.stem.replace("-", "_"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mutation", ["unknown dashboard key", "mistyped panel option", "bad enum value"])
def test_the_check_rejects_a_broken_dashboard(tsc, mutation):
    dashboard = json.loads(DASHBOARDS[0].read_text())
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    if mutation == "unknown dashboard key":
        dashboard["refreshInterval"] = "10s"
    elif mutation == "mistyped panel option":
        panel["options"]["legend"]["showLegend"] = "yes"
    else:
        panel["options"]["tooltip"]["mode"] = "everything"
    result = tsc(dashboard, "broken")
    assert result.returncode != 0, f"tsc accepted a dashboard with a {mutation}"
