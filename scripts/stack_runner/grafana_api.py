"""The part of Grafana 13.2's HTTP API that `load-gen verify` reads, for the Grafana stand-in:
answered from the provisioning files as Grafana loaded them (grafana_provisioning.py,
grafana_alerting.py), never from fixed answers, and with Grafana's checks on the request.

Routes (grafana/grafana `pkg/api/api.go`): `GET /api/datasources/uid/:uid` (org admins),
`/api/datasources/uid/:uid/health` (the data source's backend health check, run here against
the backend the data source points at), `/api/datasources/proxy/uid/:uid/*` (the data source
proxy), `GET /api/dashboards/uid/:uid`; the alerting provisioning API (`/api/v1/provisioning/`
`alert-rules`, `contact-points`, `policies`; `alert.provisioning:read`, admins). A uid that is
not a valid short uid (`util.IsValidShortUID`: `[a-zA-Z0-9_-]`, at most 40) is a 400; an unknown
one a 404 `{"message": "… not found"}`; wrong credentials a 401; an anonymous visitor (the
workshop's Editor) may read dashboards and run health checks, not read the data sources' or the
alerting provisioning (admins only).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from . import grafana_alerting, grafana_provisioning

UID = re.compile(r"[A-Za-z0-9_-]{1,40}")
# Settings Grafana returns redacted (the integrations' secure fields).
SECRET_SETTINGS = {"url": {"slack"}, "integrationKey": {"pagerduty"}, "password": None, "token": None,
                   "authorization_credentials": None}
HEALTH_TIMEOUT = 5.0


def answer(status: int, body) -> tuple[int, dict | list]:
    return status, body


class GrafanaApi:
    def __init__(self, provisioning: Path, env: dict[str, str]):
        self.env = env
        self.sources = {d["uid"]: {k: v for k, v in d.items() if k != "_file"}
                        for d in grafana_provisioning.datasources(provisioning, env)}
        self.alerting = grafana_alerting.load(provisioning, env)
        self.dashboards: dict[str, tuple[dict, str, str]] = {}
        for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
            for provider in (yaml.safe_load(path.read_text()) or {}).get("providers") or []:
                options = provider.get("options") or {}
                folder = Path(grafana_provisioning.interpolate(options.get("path", ""), env))
                for board in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
                    model = json.loads(board.read_text())
                    title = board.parent.name if options.get("foldersFromFilesStructure") and board.parent != folder \
                        else provider.get("folder") or "General"
                    self.dashboards[model.get("uid")] = (model, title, board.name)
        self.admin = (env.get("GF_SECURITY_ADMIN_USER", "admin"), env.get("GF_SECURITY_ADMIN_PASSWORD", "admin"))
        self.anonymous = env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "true"

    # -- who is asking -----------------------------------------------------------------------

    def role(self, headers) -> str | None:
        """"admin", "anonymous", or None for credentials Grafana refuses."""
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return None
            return "admin" if (user, password) == self.admin else None
        if auth:
            return None
        return "anonymous" if self.anonymous else None

    def guard(self, headers, admin: bool) -> tuple[int, dict] | None:
        role = self.role(headers)
        if role is None:
            return answer(401, {"message": "Unauthorized"})
        if admin and role != "admin":
            return answer(403, {"message": "You'll need additional permissions to perform this action."})
        return None

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> dict:
        return {
            ("GET", "/api/datasources/proxy/uid/*"): self.proxy,
            ("GET", "/api/datasources/uid/*"): self.datasource,
            ("POST", "/api/datasources/uid/*"): self.datasource,
            ("GET", "/api/dashboards/uid/*"): self.dashboard,
            ("GET", "/api/v1/provisioning/alert-rules"): self.alert_rules,
            ("GET", "/api/v1/provisioning/contact-points"): self.contact_points,
            ("GET", "/api/v1/provisioning/policies"): self.policies,
        }

    def datasource(self, path, query, body, headers):
        rest = path[len("/api/datasources/uid/"):]
        uid, _, tail = rest.partition("/")
        if not UID.fullmatch(uid):
            return answer(400, {"message": "UID is invalid"})
        if tail == "health":
            if refused := self.guard(headers, admin=False):
                return refused
            if uid not in self.sources:
                return answer(500, {"message": "Unable to load datasource metadata"})
            return self.health(self.sources[uid])
        if tail:
            return answer(404, {"message": "Not found"})
        if refused := self.guard(headers, admin=True):
            return refused
        if uid not in self.sources:
            return answer(404, {"message": "Data source not found"})
        source = self.sources[uid]
        return answer(200, {"id": list(self.sources).index(uid) + 1, "orgId": 1, "readOnly": True,
                            "access": source.get("access", "proxy"), "jsonData": source.get("jsonData") or {},
                            **{k: v for k, v in source.items() if k not in ("jsonData", "secureJsonData")}})

    def health(self, source: dict) -> tuple[int, dict]:
        """The data source's CheckHealth, performed against its backend: the request each core
        data source makes (Prometheus and Loki an instant query of a constant, Tempo its echo
        endpoint, Pyroscope its profile types)."""
        url, kind = source["url"].rstrip("/"), source["type"]
        probes = {
            "prometheus": ("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": "1+1"}), None),
            "loki": ("GET", "/loki/api/v1/query?" + urllib.parse.urlencode({"query": "vector(1)+vector(1)"}), None),
            "tempo": ("GET", "/api/echo", None),
            "grafana-pyroscope-datasource": ("POST", "/querier.v1.QuerierService/ProfileTypes", b"{}"),
        }
        if kind not in probes:
            return answer(404, {"message": "Plugin health check not implemented"})
        method, probe, data = probes[kind]
        request = urllib.request.Request(url + probe, data, {"content-type": "application/json"} if data else {},
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as error:
            return answer(400, {"status": "ERROR", "message": f"{source['name']}: {probe.split('?')[0]} answered {error.code}"})
        except OSError as error:
            return answer(400, {"status": "ERROR", "message": f"{source['name']}: cannot reach {url}: {error}"})
        return answer(200, {"status": "OK", "message": f"Successfully queried the {source['name']} API."})

    def proxy(self, path, query, body, headers):
        rest = path[len("/api/datasources/proxy/uid/"):]
        uid, _, tail = rest.partition("/")
        if not UID.fullmatch(uid):
            return answer(400, {"message": "UID is invalid"})
        if refused := self.guard(headers, admin=False):
            return refused
        if uid not in self.sources:
            return answer(404, {"message": "Unable to find datasource"})
        target = f"{self.sources[uid]['url'].rstrip('/')}/{tail}"
        if query:
            target += "?" + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(target, timeout=HEALTH_TIMEOUT) as response:
                return response.status, response.read(), response.headers.get("content-type", "application/json")
        except urllib.error.HTTPError as error:
            return error.code, error.read(), "application/json"
        except OSError as error:
            return answer(502, {"message": f"Bad Gateway: {error}"})

    def dashboard(self, path, query, body, headers):
        uid = path[len("/api/dashboards/uid/"):]
        if not UID.fullmatch(uid):
            return answer(400, {"message": "UID is invalid"})
        if refused := self.guard(headers, admin=False):
            return refused
        if uid not in self.dashboards:
            return answer(404, {"message": "Dashboard not found"})
        model, folder, file = self.dashboards[uid]
        return answer(200, {"dashboard": {**model, "id": list(self.dashboards).index(uid) + 1},
                            "meta": {"type": "db", "provisioned": True, "provisionedExternalId": file,
                                     "folderTitle": folder, "canEdit": False}})

    def alert_rules(self, path, query, body, headers):
        if refused := self.guard(headers, admin=True):
            return refused
        rules = []
        for group in self.alerting.groups:
            for rule in group["rules"]:
                rules.append({"uid": rule.get("uid"), "orgID": group.get("orgId", 1), "ruleGroup": group.get("name"),
                              "title": rule.get("title"), "condition": rule.get("condition"), "data": rule.get("data"),
                              "for": rule.get("for", "0s"), "labels": rule.get("labels") or {},
                              "annotations": rule.get("annotations") or {}, "noDataState": rule.get("noDataState"),
                              "execErrState": rule.get("execErrState"), "isPaused": bool(rule.get("isPaused")),
                              "provenance": "file"})
        return answer(200, rules)

    def contact_points(self, path, query, body, headers):
        if refused := self.guard(headers, admin=True):
            return refused
        out = []
        for point in self.alerting.contact_points:
            for receiver in point.get("receivers") or []:
                kind = receiver.get("type")
                settings = {k: ("[REDACTED]" if k in SECRET_SETTINGS and (SECRET_SETTINGS[k] is None or kind in SECRET_SETTINGS[k])
                                else v) for k, v in (receiver.get("settings") or {}).items()}
                out.append({"uid": receiver.get("uid"), "name": point.get("name"), "type": kind, "settings": settings,
                            "disableResolveMessage": bool(receiver.get("disableResolveMessage")), "provenance": "file"})
        return answer(200, out)

    def policies(self, path, query, body, headers):
        if refused := self.guard(headers, admin=True):
            return refused
        if not self.alerting.policies:
            return answer(200, {"receiver": "grafana-default-email", "group_by": ["grafana_folder", "alertname"]})
        tree = {k: v for k, v in self.alerting.policies[0].items() if k not in ("orgId", "_file")}
        return answer(200, {**tree, "provenance": "file"})
