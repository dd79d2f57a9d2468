"""Checks of Grafana provisioning files against the structure Grafana documents.

Grafana has no offline validator for these files. The rules here follow the
provisioning documentation (administration/provisioning and alerting's
file-provisioning pages): apiVersion 1; datasources with name, type, uid;
dashboard providers of type file with a path; alert rule groups whose rules
name an existing refId as condition, whose queries use existing datasource
UIDs (or the expression datasource __expr__) and whose expressions read
existing refIds; a contact point per policy receiver. The same checks run on
the files rendered on the control machine and on those on the lab's host.
"""
import json
import re
import sys
from pathlib import Path

import yaml

EXPRESSION_UID = "__expr__"
DURATION = re.compile(r"^(\d+[smhdw])+$")
REDUCERS = {"last", "mean", "min", "max", "sum", "count"}
EVALUATORS = {"gt": 1, "lt": 1, "within_range": 2, "outside_range": 2}
STATES_NO_DATA = {"Alerting", "NoData", "OK", "KeepLast"}
STATES_ERROR = {"Alerting", "Error", "OK", "KeepLast"}
RECEIVER_TYPES = {"email", "webhook", "slack", "pagerduty", "opsgenie", "teams", "telegram", "discord"}


def check(files, dashboards, dashboards_dir):
    """files: {relative path under provisioning/: text}; dashboards: {file name: text}.

    Returns the list of problems found (empty when all is well).
    """
    problems = []
    docs = {}
    for name, text in files.items():
        try:
            docs[name] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            problems.append(f"{name}: not YAML: {error}")
            continue
        if not isinstance(docs[name], dict) or docs[name].get("apiVersion") != 1:
            problems.append(f"{name}: apiVersion must be 1")

    def of_kind(folder, key):
        return [(name, item) for name, doc in docs.items() if name.startswith(folder + "/")
                for item in (doc or {}).get(key) or []]

    datasources = of_kind("datasources", "datasources")
    uids = [item.get("uid") for _, item in datasources]
    for name, item in datasources:
        for key in ("name", "type", "uid", "url"):
            if not item.get(key):
                problems.append(f"{name}: datasource {item.get('name')!r} has no {key}")
        if item.get("access", "proxy") not in ("proxy", "direct"):
            problems.append(f"{name}: datasource {item.get('name')!r}: access must be proxy or direct")
    if len(set(uids)) != len(uids):
        problems.append(f"datasource UIDs are not unique: {uids}")
    if sum(1 for _, item in datasources if item.get("isDefault")) > 1:
        problems.append("more than one default datasource")

    providers = of_kind("dashboards", "providers")
    if not providers:
        problems.append("no dashboard provider")
    for name, provider in providers:
        if provider.get("type", "file") != "file" or not (provider.get("options") or {}).get("path"):
            problems.append(f"{name}: provider {provider.get('name')!r} needs type file and options.path")
        elif provider["options"]["path"] != dashboards_dir:
            problems.append(f"{name}: provider reads {provider['options']['path']}, dashboards are in {dashboards_dir}")

    contact_points = {item.get("name") for _, item in of_kind("alerting", "contactPoints")}
    for name, point in of_kind("alerting", "contactPoints"):
        for receiver in point.get("receivers") or []:
            if not receiver.get("uid") or receiver.get("type") not in RECEIVER_TYPES:
                problems.append(f"{name}: contact point {point.get('name')!r}: receiver needs a uid and a known type")
            if receiver.get("type") == "email" and not (receiver.get("settings") or {}).get("addresses"):
                problems.append(f"{name}: email receiver without addresses")
    policies = of_kind("alerting", "policies")
    if not policies:
        problems.append("no notification policy")
    for name, policy in policies:
        if policy.get("receiver") not in contact_points:
            problems.append(f"{name}: policy receiver {policy.get('receiver')!r} is not a contact point")

    rule_uids = []
    groups = of_kind("alerting", "groups")
    if not groups:
        problems.append("no alert rule group")
    for name, group in groups:
        for key in ("name", "folder", "interval"):
            if not group.get(key):
                problems.append(f"{name}: group without {key}")
        if not DURATION.match(str(group.get("interval", ""))):
            problems.append(f"{name}: group interval {group.get('interval')!r} is not a duration")
        for rule in group.get("rules") or []:
            uid = rule.get("uid", "")
            rule_uids.append(uid)
            where = f"{name}: rule {uid!r}"
            if not uid or len(uid) > 40 or not re.fullmatch(r"[A-Za-z0-9_-]+", uid):
                problems.append(f"{where}: uid must be 1-40 letters, digits, - or _")
            if not rule.get("title"):
                problems.append(f"{where}: no title")
            steps = {step.get("refId"): step for step in rule.get("data") or []}
            if len(steps) != len(rule.get("data") or []):
                problems.append(f"{where}: refIds are not unique")
            if rule.get("condition") not in steps:
                problems.append(f"{where}: condition {rule.get('condition')!r} names no refId")
            for ref, step in steps.items():
                model = step.get("model") or {}
                if model.get("refId") != ref:
                    problems.append(f"{where}: {ref}: model.refId differs")
                source = step.get("datasourceUid")
                if source == EXPRESSION_UID:
                    if model.get("expression") not in steps:
                        problems.append(f"{where}: {ref}: expression reads {model.get('expression')!r}, no such refId")
                    if model.get("type") == "reduce" and model.get("reducer") not in REDUCERS:
                        problems.append(f"{where}: {ref}: unknown reducer {model.get('reducer')!r}")
                    if model.get("type") == "threshold":
                        for condition in model.get("conditions") or [{}]:
                            evaluator = condition.get("evaluator") or {}
                            if len(evaluator.get("params") or []) != EVALUATORS.get(evaluator.get("type"), -1):
                                problems.append(f"{where}: {ref}: bad evaluator {evaluator}")
                    if model.get("type") not in ("reduce", "threshold", "math", "resample", "classic_conditions"):
                        problems.append(f"{where}: {ref}: unknown expression type {model.get('type')!r}")
                else:
                    if source not in uids:
                        problems.append(f"{where}: {ref}: datasource {source!r} is not provisioned")
                    window = step.get("relativeTimeRange") or {}
                    if not isinstance(window.get("from"), int) or window.get("from", 0) <= window.get("to", 0):
                        problems.append(f"{where}: {ref}: relativeTimeRange.from must be above to")
                    if not model.get("target"):
                        problems.append(f"{where}: {ref}: Graphite query without target")
            if rule.get("noDataState") not in STATES_NO_DATA:
                problems.append(f"{where}: noDataState {rule.get('noDataState')!r}")
            if rule.get("execErrState") not in STATES_ERROR:
                problems.append(f"{where}: execErrState {rule.get('execErrState')!r}")
            if not DURATION.match(str(rule.get("for", ""))):
                problems.append(f"{where}: for {rule.get('for')!r} is not a duration")
    if len(set(rule_uids)) != len(rule_uids):
        problems.append(f"alert rule UIDs are not unique: {rule_uids}")

    for file_name, text in dashboards.items():
        dashboard = json.loads(text)
        if not dashboard.get("uid"):
            problems.append(f"{file_name}: dashboard without uid")
        panel_ids = [panel.get("id") for panel in dashboard.get("panels", [])]
        if len(set(panel_ids)) != len(panel_ids):
            problems.append(f"{file_name}: panel ids are not unique")
        for panel in dashboard.get("panels", []):
            for item in [panel, *panel.get("targets", [])]:
                source = (item.get("datasource") or {}).get("uid")
                if source is not None and source not in uids:
                    problems.append(f"{file_name}: panel {panel.get('title')!r} uses datasource {source!r}, not provisioned")
    return problems


def check_directories(provisioning_dir, dashboards_from, dashboards_dir):
    """check() on files on disk: provisioning_dir/<kind>/*.yaml and dashboards_from/*.json."""
    files = {str(path.relative_to(provisioning_dir)): path.read_text()
             for path in sorted(Path(provisioning_dir).glob("*/*.yaml"))}
    dashboards = {path.name: path.read_text() for path in sorted(Path(dashboards_from).glob("*.json"))}
    return check(files, dashboards, dashboards_dir)


if __name__ == "__main__":
    # grafana_provisioning.py PROVISIONING_DIR DASHBOARD_FILES_DIR DASHBOARDS_DIR_ON_THE_HOST
    found = check_directories(*sys.argv[1:4])
    print("\n".join(found) or "provisioning files: no problem found")
    sys.exit(1 if found else 0)
