#!/usr/bin/env python3
"""Stand-in for Grafana 13.2 (no build of it runs here). At start it reads the provisioning
from the container paths compose mounts (`/etc/grafana/provisioning`, the dashboards folder the
provider names) and the `GF_*` environment, interpolated as Grafana does, and exits non-zero on
anything that would stop Grafana or leave a correlation broken: unknown data source types,
duplicate uids, a missing dashboards path, a wrapped or untitled dashboard, a panel naming a
data source that is not provisioned, a home dashboard path that does not exist, an invalid
anonymous role, and broken alerting provisioning (grafana_alerting.py: unknown keys, a rule
whose condition, expression or data source resolves to nothing, a policy routing to a contact
point that does not exist, a contact point whose secret is unset, an undefined template). Then
it serves `/api/health` (what the compose healthcheck asks) and the part of Grafana's HTTP API
that `load-gen verify` reads — data sources by uid and their health checks, the data source
proxy, dashboards by uid, the alerting provisioning — from what it loaded (grafana_api.py).

argv: the image's entrypoint (`/run.sh`), ignored.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stack_runner import grafana_api, grafana_provisioning  # noqa: E402
from stack_runner.stand_ins.common import BIND, Recorder, serve  # noqa: E402

recorder = Recorder("grafana")


def environment_problems(env: dict[str, str]) -> list[str]:
    found = []
    role = env.get("GF_AUTH_ANONYMOUS_ORG_ROLE")
    if role and role not in ("Viewer", "Editor", "Admin"):
        found.append(f"GF_AUTH_ANONYMOUS_ORG_ROLE={role}: must be Viewer, Editor or Admin")
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and not Path(home).is_file():
        found.append(f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH={home}: no such file in the container")
    return found


def main() -> None:
    env = dict(os.environ)
    provisioning = Path(env.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"))
    found = environment_problems(env) + grafana_provisioning.problems(provisioning, env)
    if found:
        for problem in found:
            print(f"stand-in grafana: provisioning error: {problem}", file=sys.stderr, flush=True)
        sys.exit(1)
    api = grafana_api.GrafanaApi(provisioning, env)
    port = int(env.get("GF_SERVER_HTTP_PORT", "3000"))
    routes = {("GET", "/api/health"): lambda *a: (200, {"database": "ok", "version": "13.2.0 (stand-in)"}),
              **api.routes()}
    print(f'{{"stand-in": "grafana", "http_port": {port}, "datasources": {len(api.sources)}, '
          f'"dashboards": {len(api.dashboards)}}}', flush=True)
    serve((BIND, port), routes, recorder)


if __name__ == "__main__":
    main()
