"""Grafana 13.2's reading of its alerting provisioning (`provisioning/alerting/*.yaml`): rule
groups, contact points, notification policies and templates, as the Grafana stand-in loads them
at start and the static check (scripts/checks/alerting.py) reads them.

Shapes and keys are Grafana's own file format, apiVersion 1 (pkg/services/provisioning/alerting:
file_v1.go, rules_types.go, contact_point_types.go, notification_policy_types.go,
text_templates_types.go); the settings each integration requires are those of grafana/alerting's
receivers/{webhook,slack,email,pagerduty}/v1/config.go. What Grafana interpolates with its
environment (values.go; `$$` is a literal `$`) is modelled per field: rule and group strings,
labels, contact point settings and policies are interpolated; query models and templates are
not; annotations are read raw (and `${` in them is flagged: grafana/grafana#127214 would expand
it). `problems()` lists what would stop Grafana from provisioning, or leave a rule, a route or a
notification broken: among them a rule without a label the policies group by, a template that
reads a Tempo series label with the quotes Grafana's Tempo data source adds, and feature toggles
set in the deprecated GF_FEATURE_TOGGLES_ENABLE form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FILE_KEYS = {"apiVersion", "groups", "deleteRules", "contactPoints", "deleteContactPoints", "policies", "resetPolicies",
             "muteTimes", "deleteMuteTimes", "templates", "deleteTemplates"}
GROUP_KEYS = {"orgId", "name", "folder", "interval", "rules"}
RULE_KEYS = {"uid", "title", "condition", "data", "dasboardUid", "dashboardUid", "panelId", "noDataState", "execErrState",
             "for", "keepFiringFor", "missing_series_evals_to_resolve", "annotations", "labels", "isPaused",
             "notification_settings", "record"}
QUERY_KEYS = {"refId", "queryType", "relativeTimeRange", "datasourceUid", "model"}
CONTACT_POINT_KEYS = {"orgId", "name", "receivers"}
RECEIVER_KEYS = {"uid", "type", "settings", "disableResolveMessage"}
TEMPLATE_KEYS = {"orgId", "name", "template"}
POLICY_KEYS = {"orgId", "receiver", "group_by", "matchers", "object_matchers", "mute_time_intervals",
               "active_time_intervals", "continue", "group_wait", "group_interval", "repeat_interval", "routes"}
EXPRESSION_UID = "__expr__"
EXPRESSION_TYPES = {"math", "reduce", "resample", "classic_conditions", "threshold", "sql"}
NO_DATA_STATES = {"Alerting", "NoData", "OK", "KeepLast"}
EXEC_ERR_STATES = {"Alerting", "Error", "OK", "KeepLast"}
MATCH_OPS = {"=", "!=", "=~", "!~"}
# The scheduler's base interval (unified_alerting.base_interval): a group's interval must be a multiple.
BASE_INTERVAL_S = 10
UID = re.compile(r"[A-Za-z0-9_-]{1,40}")
DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
# Settings each integration reads (json tags of grafana/alerting receivers/<type>/v1/config.go).
SETTINGS = {
    "webhook": {"url", "httpMethod", "maxAlerts", "authorization_scheme", "authorization_credentials", "username",
                "password", "title", "message", "tlsConfig", "hmacConfig", "headers", "payload"},
    "slack": {"endpointUrl", "url", "token", "recipient", "text", "title", "username", "icon_emoji", "icon_url",
              "mentionChannel", "mentionUsers", "mentionGroups", "color", "footer"},
    "email": {"singleEmail", "addresses", "message", "subject"},
    "pagerduty": {"integrationKey", "severity", "details", "class", "component", "group", "summary", "source", "client",
                  "client_url", "url"},
}
# Template names Grafana defines itself (grafana/alerting templates/default_template.go).
DEFAULT_TEMPLATE = re.compile(r"(\w+\.)?default\.\w+|__\w+")


@dataclass
class Alerting:
    """The effective provisioning, as Grafana would hold it after reading every file."""
    groups: list[dict] = field(default_factory=list)          # each with "_file"; rules interpolated as Grafana does
    contact_points: list[dict] = field(default_factory=list)
    policies: list[dict] = field(default_factory=list)
    templates: dict[str, str] = field(default_factory=dict)   # name → template text
    problems: list[str] = field(default_factory=list)


def seconds(text) -> float | None:
    """A Prometheus duration (model.ParseDuration) in seconds, or None if it is not one."""
    text = str(text)
    if text == "0":
        return 0.0
    match = DURATION.fullmatch(text)
    if not text or not match:
        return None
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(part[:-2] if part.endswith("ms") else part[:-1]) * units["ms" if part.endswith("ms") else part[-1]]
               for part in match.groups() if part)


def unknown(where: str, node, allowed: set[str]) -> list[str]:
    if not isinstance(node, dict):
        return [f"{where}: must be a mapping, is {type(node).__name__}"]
    return [f"{where}: unknown key {k!r} (Grafana 13.2 reads {sorted(allowed)})" for k in node if k not in allowed]


def load(provisioning: Path, env: dict[str, str]) -> Alerting:
    from .grafana_provisioning import interpolate

    out = Alerting()
    for path in sorted((provisioning / "alerting").glob("*.y*ml")):
        where = f"alerting/{path.name}"
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            out.problems.append(f"{where}: not YAML: {error}")
            continue
        out.problems += unknown(where, document, FILE_KEYS)
        if document.get("apiVersion") != 1:
            out.problems.append(f"{where}: apiVersion must be 1")
        for group in document.get("groups") or []:
            rules = [{**interpolate({k: v for k, v in r.items() if k not in ("data", "annotations")}, env),
                      "data": r.get("data"), "annotations": r.get("annotations")} for r in group.get("rules") or []
                     if isinstance(r, dict)]
            out.groups.append({**interpolate({k: v for k, v in group.items() if k != "rules"}, env), "rules": rules,
                               "_file": path.name, "_raw": group})
        out.contact_points += [{**interpolate(cp, env), "_file": path.name} for cp in document.get("contactPoints") or []]
        out.policies += [{**interpolate(p, env), "_file": path.name} for p in document.get("policies") or []]
        for template in document.get("templates") or []:
            out.problems += unknown(f"{where}: template {template.get('name')}", template, TEMPLATE_KEYS)
            if not template.get("name") or not isinstance(template.get("template"), str):
                out.problems.append(f"{where}: a template needs a name and a template text")
                continue
            out.templates[template["name"]] = template["template"]
    return out


def problems(provisioning: Path, env: dict[str, str], datasource_uids: set[str],
             dashboards: dict[str, set[int]] | None = None) -> list[str]:
    alerting = load(provisioning, env)
    found = list(alerting.problems)
    found += rule_problems(alerting, datasource_uids, dashboards)
    found += toggle_problems(alerting, env)
    names = contact_point_names(alerting)
    found += contact_point_problems(alerting)
    found += template_problems(alerting)
    found += grouping_problems(alerting)
    for policy in alerting.policies:
        found += policy_problems(f"alerting/{policy['_file']}: policy", policy, names, root=True)
    orgs = [p.get("orgId", 1) for p in alerting.policies]
    for org in {o for o in orgs if orgs.count(o) > 1}:
        found.append(f"alerting: two notification policy trees for org {org}: the last one read replaces the other")
    return found


def contact_point_names(alerting: Alerting) -> set[str]:
    return {str(cp.get("name", "")).strip() for cp in alerting.contact_points}


def rule_problems(alerting: Alerting, datasource_uids: set[str], dashboards: dict[str, set[int]] | None) -> list[str]:
    found, uids, titles = [], set(), set()
    for group in alerting.groups:
        where = f"alerting/{group['_file']}: group {group.get('name')!r}"
        found += unknown(where, group["_raw"], GROUP_KEYS)
        if not str(group.get("name", "")).strip() or not str(group.get("folder", "")).strip():
            found.append(f"{where}: a rule group needs a name and a folder")
        interval = seconds(group.get("interval", ""))
        if interval is None or interval <= 0 or interval % BASE_INTERVAL_S:
            found.append(f"{where}: interval {group.get('interval')!r} is not a multiple of the scheduler's {BASE_INTERVAL_S}s")
        for rule in group["rules"]:
            rule_where = f"{where}: rule {rule.get('title')!r}"
            found += unknown(rule_where, rule, RULE_KEYS)
            found += one_rule_problems(rule_where, rule, datasource_uids, dashboards)
            if rule.get("uid") in uids:
                found.append(f"{rule_where}: uid {rule.get('uid')} is used twice")
            key = (group.get("folder"), rule.get("title"))
            if key in titles:
                found.append(f"{rule_where}: two rules of folder {key[0]!r} have this title")
            uids.add(rule.get("uid"))
            titles.add(key)
    return found


def one_rule_problems(where: str, rule: dict, datasource_uids: set[str], dashboards: dict[str, set[int]] | None) -> list[str]:
    found = []
    if not UID.fullmatch(str(rule.get("uid", ""))):
        found.append(f"{where}: uid {rule.get('uid')!r} must be 1-40 letters, digits, '-' or '_'")
    if not str(rule.get("title", "")).strip():
        found.append(f"{where}: no title")
    data = rule.get("data") or []
    refs = [q.get("refId") for q in data if isinstance(q, dict)]
    if not data:
        found.append(f"{where}: no data (queries and expressions)")
    for ref in {r for r in refs if refs.count(r) > 1}:
        found.append(f"{where}: refId {ref} is used twice")
    if rule.get("record") is None and rule.get("condition") not in refs:
        found.append(f"{where}: condition {rule.get('condition')!r} is none of the refIds {refs}")
    for query in data:
        found += query_problems(f"{where} {query.get('refId')}", query, set(refs), datasource_uids)
    if str(rule.get("noDataState", "NoData")) not in NO_DATA_STATES:
        found.append(f"{where}: noDataState {rule.get('noDataState')!r} is not one of {sorted(NO_DATA_STATES)}")
    if str(rule.get("execErrState", "Alerting")) not in EXEC_ERR_STATES:
        found.append(f"{where}: execErrState {rule.get('execErrState')!r} is not one of {sorted(EXEC_ERR_STATES)}")
    for key in ("for", "keepFiringFor"):
        if key in rule and seconds(rule[key]) is None:
            found.append(f"{where}: {key} {rule[key]!r} is not a duration")
    for key in ("labels", "annotations"):
        values = rule.get(key) or {}
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            found.append(f"{where}: {key} must map names to strings")
    found += tempo_label_problems(where, rule)
    for name, value in (rule.get("annotations") or {}).items():
        if "${" in str(value):
            found.append(f"{where}: annotation {name} contains '${{': raw in Grafana 13.2, expanded by later releases")
    if dashboards is not None and rule.get("dashboardUid"):
        uid, panel = rule["dashboardUid"], rule.get("panelId")
        if uid not in dashboards:
            found.append(f"{where}: dashboardUid {uid!r} is not a provisioned dashboard")
        elif panel is not None and int(panel) not in dashboards[uid]:
            found.append(f"{where}: panelId {panel} is not a panel of dashboard {uid}")
    return found


def tempo_attributes(rule: dict) -> set[str]:
    """The attributes a rule's TraceQL metrics queries group by: the labels of Tempo's series."""
    found = set()
    for query in rule.get("data") or []:
        if isinstance(query, dict) and query.get("datasourceUid") == "tempo":
            by = re.search(r"\bby\s*\(([^)]*)\)", str((query.get("model") or {}).get("query", "")))
            found |= {a.strip() for a in by.group(1).split(",") if a.strip()} if by else set()
    return found


def tempo_label_problems(where: str, rule: dict) -> list[str]:
    r"""Grafana's Tempo data source wraps a string label value in double quotes (Grafana's
    pkg/tsdb/tempo/traceql/metrics.go, metricsValueToString: `"sample-app"`, quotes included), so
    a template must strip them: reReplaceAll "\"" "" (index .Labels "<attribute>")."""
    found = []
    for attribute in tempo_attributes(rule):
        name = re.escape(attribute)
        read = rf'index\s+(?:\$labels|\.Labels)\s+"{name}"'
        stripped = rf'reReplaceAll\s+"\\""\s+""\s+\(\s*{read}\s*\)'
        for key in ("labels", "annotations"):
            for field_name, text in (rule.get(key) or {}).items():
                if len(re.findall(read, str(text))) > len(re.findall(stripped, str(text))):
                    found.append(f"{where}: {key} {field_name} reads {attribute} as Tempo labels it, in double quotes "
                                 f"(\"sample-app\"): write reReplaceAll \"\\\"\" \"\" (index .Labels \"{attribute}\")")
    return found


def grouping_problems(alerting: Alerting) -> list[str]:
    """Every label the policies group by must be on every rule's alerts (from the rule's labels or
    its queries' series), or all its alerts fall into one group whatever their service."""
    grouped = set()
    for policy in alerting.policies:
        grouped |= grouping_labels(policy)
    grouped -= {"...", "alertname", "grafana_folder"}
    found = []
    for group in alerting.groups:
        for rule in group["rules"]:
            queries = [q for q in rule.get("data") or [] if isinstance(q, dict) and q.get("datasourceUid") != "__expr__"]
            for label in sorted(grouped - set(rule.get("labels") or {})):
                if not queries or not all(series_carry(q, label) for q in queries):
                    found.append(f"alerting/{group['_file']}: rule {rule.get('title')!r}: no {label!r} label (set it in "
                                 f"labels, or query by it), which the notification policies group by")
    return found


def series_carry(query: dict, label: str) -> bool:
    """Whether a query's series carry `label`: an aggregation by it, or a recorded series whose
    level (`level:metric:operations`) names it; Tempo's series carry only their `by` attributes."""
    model = query.get("model") or {}
    if query.get("datasourceUid") == "tempo":
        return label in tempo_attributes({"data": [query]})
    expr = str(model.get("expr", ""))
    by = re.search(r"\bby\s*\(([^)]*)\)", expr)
    if by:
        return label in {a.strip() for a in by.group(1).split(",")}
    recorded = re.match(r"\s*([a-z_]+):[a-z_]+:[a-z0-9_]+\b", expr)
    return bool(recorded) and label in recorded.group(1).split("_")


def grouping_labels(policy: dict) -> set[str]:
    names = set(policy.get("group_by") or [])
    for route in policy.get("routes") or []:
        names |= grouping_labels(route)
    return names


def query_problems(where: str, query: dict, refs: set[str], datasource_uids: set[str]) -> list[str]:
    found = unknown(where, query, QUERY_KEYS)
    model = query.get("model")
    uid = query.get("datasourceUid")
    if not isinstance(model, dict):
        return found + [f"{where}: no model"]
    if model.get("refId", query.get("refId")) != query.get("refId"):
        found.append(f"{where}: model.refId {model.get('refId')!r} differs from refId {query.get('refId')!r}")
    if isinstance(model.get("datasource"), dict) and model["datasource"].get("uid") != uid:
        found.append(f"{where}: model.datasource.uid {model['datasource'].get('uid')!r} differs from datasourceUid {uid!r}")
    if uid == EXPRESSION_UID:
        if model.get("type") not in EXPRESSION_TYPES:
            return found + [f"{where}: expression type {model.get('type')!r} is not one of {sorted(EXPRESSION_TYPES)}"]
        text = str(model.get("expression", ""))
        used = set(re.findall(r"\$\{?(\w+)\}?", text)) if model["type"] == "math" else {text}
        for ref in used - refs:
            found.append(f"{where}: the {model['type']} expression reads {ref!r}, which is no refId of the rule")
        if model["type"] == "threshold" and not model.get("conditions"):
            found.append(f"{where}: a threshold needs conditions")
        return found
    if uid not in datasource_uids:
        found.append(f"{where}: datasourceUid {uid!r} is not a provisioned data source")
    span = query.get("relativeTimeRange") or {}
    if not isinstance(span, dict) or not int(span.get("from", 0)) > int(span.get("to", 0)):
        found.append(f"{where}: relativeTimeRange must look back (from > to, in seconds)")
    return found


# One variable per feature toggle, GF_FEATURE_TOGGLES_<name>=true: the form Grafana supports since
# grafana/grafana#121271 (opened 2026-03-27, merged), which deprecated the list form
# GF_FEATURE_TOGGLES_ENABLE=<name>,<name>. Only "true" is taken as on here: the form that PR
# documents.
TOGGLE_PREFIX = "GF_FEATURE_TOGGLES_"
DEPRECATED_TOGGLE_LIST = "GF_FEATURE_TOGGLES_ENABLE"


def enabled_toggles(env: dict[str, str]) -> set[str]:
    """The feature toggles an environment turns on in the supported form (the deprecated list
    is not counted: toggle_problems names it)."""
    return {key[len(TOGGLE_PREFIX):] for key, value in env.items()
            if key.startswith(TOGGLE_PREFIX) and key != DEPRECATED_TOGGLE_LIST and str(value).strip().lower() == "true"}


def toggle_problems(alerting: Alerting, env: dict[str, str]) -> list[str]:
    """Tempo is an alerting data source only with the tempoAlerting feature toggle (experimental
    in 13.2; pkg/plugins config TempoAlertingEnabled): without it the rule cannot be evaluated."""
    found = []
    if DEPRECATED_TOGGLE_LIST in env:
        found.append(f"alerting: {DEPRECATED_TOGGLE_LIST}={env[DEPRECATED_TOGGLE_LIST]} is the form Grafana deprecated "
                     f"(grafana/grafana#121271): set {TOGGLE_PREFIX}<name>: \"true\" for each toggle")
    uses_tempo = [r.get("title") for g in alerting.groups for r in g["rules"]
                  if any(isinstance(q, dict) and q.get("datasourceUid") == "tempo" for q in r.get("data") or [])]
    if uses_tempo and "tempoAlerting" not in enabled_toggles(env):
        found.append(f"alerting: rules {uses_tempo} query Tempo, which alerting accepts only with "
                     f"{TOGGLE_PREFIX}tempoAlerting=true")
    return found


def effective_rules(provisioning: Path, env: dict[str, str]) -> list[dict]:
    """Every rule as Grafana holds it, with its folder and group (for the checks that run its queries)."""
    return [{**{k: v for k, v in rule.items()}, "folder": group.get("folder"), "group": group.get("name")}
            for group in load(provisioning, env).groups for rule in group["rules"]]


def contact_point_problems(alerting: Alerting) -> list[str]:
    found, uids, names = [], set(), []
    for cp in alerting.contact_points:
        where = f"alerting/{cp['_file']}: contact point {cp.get('name')!r}"
        found += unknown(where, {k: v for k, v in cp.items() if k != "_file"}, CONTACT_POINT_KEYS)
        names.append(str(cp.get("name", "")).strip())
        if not names[-1]:
            found.append(f"{where}: no name")
        if not cp.get("receivers"):
            found.append(f"{where}: no receivers (integrations)")
        for receiver in cp.get("receivers") or []:
            found += unknown(where, receiver, RECEIVER_KEYS)
            uid = str(receiver.get("uid", "")).strip()
            if not UID.fullmatch(uid):
                found.append(f"{where}: integration uid {uid!r} must be 1-40 letters, digits, '-' or '_'")
            if uid in uids:
                found.append(f"{where}: integration uid {uid} is used twice")
            uids.add(uid)
            found += settings_problems(f"{where} ({receiver.get('type')})", receiver.get("type"), receiver.get("settings"))
    for name in {n for n in names if names.count(n) > 1}:
        found.append(f"alerting: contact point {name!r} is provisioned twice")
    return found


def settings_problems(where: str, kind, settings) -> list[str]:
    if not isinstance(settings, dict) or not settings:
        return [f"{where}: no settings"]
    found = []
    if kind in SETTINGS:
        found += [f"{where}: unknown setting {k!r}" for k in settings if k not in SETTINGS[kind]]
    value = lambda key: str(settings.get(key) or "").strip()
    if kind == "webhook" and not re.match(r"https?://[^/\s]+", value("url")):
        found.append(f"{where}: url {value('url')!r} is not an http(s) URL (required)")
    elif kind == "slack" and not value("url") and not (value("token") and value("recipient")):
        found.append(f"{where}: needs a webhook url, or a token and a recipient (an unset secret in .env?)")
    elif kind == "slack" and value("url") and not re.match(r"https?://", value("url")):
        found.append(f"{where}: url {value('url')!r} is not an http(s) URL")
    elif kind == "email" and not value("addresses"):
        found.append(f"{where}: no addresses (an unset variable in .env?): Grafana says 'could not find addresses in settings'")
    elif kind == "pagerduty" and not value("integrationKey"):
        found.append(f"{where}: no integrationKey (an unset variable in .env?)")
    return found


def template_problems(alerting: Alerting) -> list[str]:
    found, defined = [], set()
    for name, text in alerting.templates.items():
        defined |= set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', text))
        opened = len(re.findall(r"\{\{-?\s*(?:define|if|range|with|block)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        if opened != closed or text.count("{{") != text.count("}}"):
            found.append(f"alerting: template {name}: unbalanced actions ({opened} blocks opened, {closed} ended)")
    for cp in alerting.contact_points:
        for receiver in cp.get("receivers") or []:
            for key, value in (receiver.get("settings") or {}).items():
                for used in re.findall(r'\{\{-?\s*template\s+"([^"]+)"', str(value)):
                    if used not in defined and not DEFAULT_TEMPLATE.fullmatch(used):
                        found.append(f"alerting: contact point {cp.get('name')!r} {key}: template {used!r} is defined nowhere")
    return found


def policy_problems(where: str, policy: dict, names: set[str], root: bool = False) -> list[str]:
    found = unknown(where, {k: v for k, v in policy.items() if k != "_file"}, POLICY_KEYS)
    receiver = policy.get("receiver")
    if root and not receiver:
        found.append(f"{where}: the root policy needs a receiver")
    if receiver is not None and str(receiver).strip() not in names:
        found.append(f"{where}: receiver {receiver!r} is no provisioned contact point ({sorted(names)})")
    for matcher in policy.get("object_matchers") or []:
        if not (isinstance(matcher, list) and len(matcher) == 3 and matcher[1] in MATCH_OPS):
            found.append(f"{where}: object matcher {matcher!r} is not [label, one of {sorted(MATCH_OPS)}, value]")
    for matcher in policy.get("matchers") or []:
        if not re.fullmatch(r'\s*[\w.]+\s*(=~|!~|!=|=)\s*"?[^"]*"?\s*', str(matcher)):
            found.append(f"{where}: matcher {matcher!r} is not 'label op value'")
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in policy and seconds(policy[key]) is None:
            found.append(f"{where}: {key} {policy[key]!r} is not a duration")
    for i, route in enumerate(policy.get("routes") or []):
        found += policy_problems(f"{where} → route {i + 1}", route, names)
    return found


def routing_labels(policy: dict) -> set[str]:
    """Label names the policy tree matches on (alertname and Grafana's own labels left out)."""
    names = {m[0] for m in policy.get("object_matchers") or [] if isinstance(m, list) and m}
    names |= {re.split(r"\s*(?:=~|!~|!=|=)", str(m).strip())[0] for m in policy.get("matchers") or []}
    for route in policy.get("routes") or []:
        names |= routing_labels(route)
    return {n for n in names if n != "alertname" and not n.startswith(("grafana_", "__"))}
