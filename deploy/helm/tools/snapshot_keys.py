#!/usr/bin/env python3
"""Regenerates deploy/helm/charts.lock.yaml: for each pinned chart, the key paths its
values.yaml (and values.schema.json) accept, and the Services it renders with our values.

The check (scripts/checks/kubernetes.py) runs where GitHub is out of reach, so it cannot read
the charts. This tool reads each chart once, from a git checkout of its source repository at
the pinned commit, and writes only what the check needs: generated lists, never upstream files.

    python3 deploy/helm/tools/snapshot_keys.py --git-dir grafana-community/helm-charts=/path/to/repo.git \
        [--helm /path/to/helm] [--only grafana]

--git-dir maps each source repository (as written in CHARTS below) to a local git directory
(a bare clone is enough). A chart already in the lock is read at the commit recorded there;
--upgrade takes the newest commit that touched it instead. With --helm, every chart is also
rendered (`helm template`) with its values file, and the Services it creates (name, ports) and
each workload container's filesystem (image, read-only root, temp dir, writable mounts) are
recorded with a digest of the values they were rendered from: the check then fails when a values
file changes without a new snapshot.

Key paths: a dotted path per map key of values.yaml (lists are leaves). A path is "open" (any
key below it is accepted) when its default is an empty map, an empty list or null, when the
schema allows additional properties there, or when it is listed in OPEN below with the reason
the chart's templates pass it through unchanged.
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
LOCK = ROOT / "deploy/helm/charts.lock.yaml"
NAMESPACE = "observability"
KUBERNETES_VERSION = "1.33.0"

# name: where the chart lives, the release it is installed as, its values file, and the helm
# repository users install it from (Chart.yaml `version` and `appVersion` are read from source).
CHARTS = {
    "kube-prometheus-stack": {
        "source": ("prometheus-community/helm-charts", "charts/kube-prometheus-stack"),
        "repository": "https://prometheus-community.github.io/helm-charts",
        "release": "kps", "values": "deploy/helm/kube-prometheus-stack.values.yaml",
        # Rendering needs these subcharts' defaults; they live in the same repository.
        "subcharts": {"kube-state-metrics": "charts/kube-state-metrics",
                      "prometheus-node-exporter": "charts/prometheus-node-exporter"}},
    "loki": {
        "source": ("grafana-community/helm-charts", "charts/loki"),
        "repository": "https://grafana-community.github.io/helm-charts",
        "release": "loki", "values": "deploy/helm/loki.values.yaml"},
    "tempo-distributed": {
        "source": ("grafana-community/helm-charts", "charts/tempo-distributed"),
        "repository": "https://grafana-community.github.io/helm-charts",
        "release": "tempo", "values": "deploy/helm/tempo-distributed.values.yaml"},
    "pyroscope": {
        "source": ("grafana/pyroscope", "operations/pyroscope/helm/pyroscope"),
        "repository": "https://grafana.github.io/helm-charts",
        "release": "pyroscope", "values": "deploy/helm/pyroscope.values.yaml"},
    "alloy": {
        "source": ("grafana/alloy", "operations/helm/charts/alloy"),
        "repository": "https://grafana.github.io/helm-charts",
        "release": "alloy", "values": "deploy/helm/alloy.values.yaml"},
    "grafana": {
        "source": ("grafana-community/helm-charts", "charts/grafana"),
        "repository": "https://grafana-community.github.io/helm-charts",
        "release": "grafana", "values": "deploy/helm/grafana.values.yaml"},
}

# Maps with defaults whose templates render every key given (checked to exist in values.yaml).
OPEN = {
    "grafana": {
        "grafana.ini": "templates/_config.tpl writes each section and key into grafana.ini",
        "containerSecurityContext": "templates/_pod.tpl renders it with toYaml as the container's securityContext",
    },
    "tempo-distributed": {
        "metricsGenerator.config": "templates/configmap-tempo.yaml renders processor, storage and registry with toYaml",
        "overrides": "rendered with toYaml into the Tempo config's overrides block",
    },
    "pyroscope": {
        "architecture.microservices.v2": "templates/_helpers.tpl merges each component map into its workload",
    },
}

# Custom resources our manifests create, from the CRDs this chart ships: their key paths too.
CRDS = {
    "kube-prometheus-stack": {
        "ServiceMonitor": "charts/crds/crds/crd-servicemonitors.yaml",
        "PrometheusRule": "charts/crds/crds/crd-prometheusrules.yaml",
    },
}


def key_paths(value, prefix="") -> tuple[set[str], set[str]]:
    """(every key path, the open ones) of a values tree."""
    keys, open_ = set(), set()
    if isinstance(value, dict):
        if not value and prefix:
            open_.add(prefix)
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            keys.add(path)
            k, o = key_paths(child, path)
            keys |= k
            open_ |= o
    elif prefix and (value is None or value == []):
        open_.add(prefix)
    return keys, open_


def schema_paths(schema: dict, root: dict, prefix="", depth=0) -> tuple[set[str], set[str]]:
    """Key paths a JSON schema names, and where it allows any key."""
    keys, open_ = set(), set()
    if depth > 30 or not isinstance(schema, dict):
        return keys, open_
    if "$ref" in schema and schema["$ref"].startswith("#/"):
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {})
        return schema_paths(target, root, prefix, depth + 1)
    for combinator in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(combinator, []):
            k, o = schema_paths(sub, root, prefix, depth + 1)
            keys |= k
            open_ |= o
    extra = schema.get("additionalProperties")
    if prefix and (extra is True or isinstance(extra, dict)) or (prefix and schema.get("type") == "object" and "properties" not in schema and extra is None):
        open_.add(prefix)
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        keys.add(path)
        k, o = schema_paths(sub, root, path, depth + 1)
        keys |= k
        open_ |= o
    return keys, open_


def crd_paths(crd: dict) -> dict:
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    keys, open_ = schema_paths(spec, spec)
    return {"keys": sorted(keys), "open_paths": sorted(open_)}


def values_digest(path: Path) -> str:
    """The parsed values (comments and layout do not count), as sha256 of canonical JSON."""
    data = yaml.safe_load(path.read_text())
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def extract(git_dir: str, commit: str, path: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", git_dir, "archive", "--format=tar", commit, path],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def render_services(helm: str, chart_dir: Path, name: str, spec: dict, git_dir: str, commit: str) -> list[dict]:
    """Services (and the operator's Prometheus/Alertmanager objects) the chart renders with our
    values. Subcharts from the chart's own repository are rendered too; the others (all disabled
    by our values) are dropped."""
    for sub, path in spec.get("subcharts", {}).items():
        with tempfile.TemporaryDirectory() as tmp:
            extract(git_dir, commit, path, Path(tmp))
            shutil.copytree(Path(tmp) / path, chart_dir / "charts" / sub)
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    charts = chart_dir / "charts"
    meta["dependencies"] = [d for d in meta.get("dependencies", [])
                            if (charts / d["name"]).is_dir() or list(charts.glob(f"{d['name']}-*.tgz"))]
    (chart_dir / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (chart_dir / "Chart.lock").unlink(missing_ok=True)
    run = subprocess.run([helm, "template", spec["release"], str(chart_dir), "--namespace", NAMESPACE,
                          "--kube-version", KUBERNETES_VERSION, "-f", str(ROOT / spec["values"])],
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{name}: helm template failed:\n{run.stderr}")
    out = run.stdout
    found = []
    for doc in yaml.safe_load_all(out):
        if not doc:
            continue
        if doc["kind"] == "Service":
            ports = sorted({p["port"] for p in doc["spec"].get("ports", [])})
            found.append({"kind": "Service", "name": doc["metadata"]["name"], "ports": ports})
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            found.append({"kind": doc["kind"], "name": doc["metadata"]["name"], "containers": filesystems(doc)})
        elif doc["kind"] in ("Prometheus", "Alertmanager", "ServiceMonitor"):
            found.append({"kind": doc["kind"], "name": doc["metadata"]["name"]})
    return sorted(found, key=lambda r: (r["kind"], r["name"]))


def filesystems(workload: dict) -> list[dict]:
    """Per container: its image, whether its root filesystem is read-only, where its temp dir is
    (TMPDIR, else /tmp: Go's os.TempDir, Rust's std::env::temp_dir) and which paths it can write
    (mounts of emptyDir, PVC or claim-template volumes, not readOnly). scripts/checks/kubernetes.py
    makes the same summary of the project's own manifests with this function."""
    pod = workload["spec"]["template"]["spec"]
    writable_volumes = {v["name"] for v in pod.get("volumes") or []
                        if "emptyDir" in v or "persistentVolumeClaim" in v or "ephemeral" in v}
    writable_volumes |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates") or []}
    out = []
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        out.append({
            "name": c["name"],
            "image": c.get("image", ""),
            "readOnlyRootFilesystem": (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True,
            "tempDir": env.get("TMPDIR") or "/tmp",
            "writablePaths": sorted({m["mountPath"] for m in c.get("volumeMounts") or []
                                     if m["name"] in writable_volumes and not m.get("readOnly")}),
        })
    return out


def snapshot(name: str, spec: dict, git_dir: str, helm: str | None, pinned: str | None) -> dict:
    """The chart at `pinned` (the lock's commit), or at the newest commit that touched it."""
    repo, path = spec["source"]
    commit = pinned or subprocess.run(["git", "-C", git_dir, "log", "-1", "--format=%H", "HEAD", "--", path],
                                      check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        extract(git_dir, commit, path, Path(tmp))
        chart_dir = Path(tmp) / path
        meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        values = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
        keys, open_ = key_paths(values)
        schema_file = chart_dir / "values.schema.json"
        if schema_file.exists():
            schema = json.loads(schema_file.read_text())
            k, o = schema_paths(schema, schema)
            keys |= k
            open_ |= o
        for extra, reason in OPEN.get(name, {}).items():
            if extra not in keys:
                sys.exit(f"{name}: OPEN names {extra}, which values.yaml does not have ({reason})")
            open_.add(extra)
        entry = {
            "name": name,
            "version": str(meta["version"]),
            "appVersion": str(meta["appVersion"]),
            "repository": spec["repository"],
            "source": {"repo": repo, "path": path, "commit": commit},
            "release": spec["release"],
            "namespace": NAMESPACE,
            "values_file": spec["values"],
            "open_paths": sorted(open_),
            "open_reasons": OPEN.get(name, {}),
            "keys": sorted(keys),
        }
        crds = {kind: crd_paths(yaml.safe_load((chart_dir / file).read_text())) for kind, file in CRDS.get(name, {}).items()}
        if crds:
            entry["crd_keys"] = crds
        if helm:
            entry["rendered"] = {
                "helm": subprocess.run([helm, "version", "--short"], capture_output=True, text=True).stdout.strip(),
                "kubernetes_version": KUBERNETES_VERSION,
                "values_digest": values_digest(ROOT / spec["values"]),
                "resources": render_services(helm, chart_dir, name, spec, git_dir, commit),
            }
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", action="append", default=[], metavar="OWNER/NAME=DIR")
    parser.add_argument("--helm", help="helm binary: also record the Services each chart renders")
    parser.add_argument("--only", action="append", help="refresh only these charts")
    parser.add_argument("--upgrade", action="store_true",
                        help="take each chart's newest commit; without it a chart in the lock stays at its commit")
    args = parser.parse_args()
    git_dirs = dict(item.split("=", 1) for item in args.git_dir)
    lock = yaml.safe_load(LOCK.read_text()) if LOCK.exists() else {"charts": []}
    entries = {c["name"]: c for c in lock["charts"]}
    for name, spec in CHARTS.items():
        if args.only and name not in args.only:
            continue
        repo = spec["source"][0]
        if repo not in git_dirs:
            sys.exit(f"no --git-dir for {repo} (needed for {name})")
        pinned = None if args.upgrade else entries.get(name, {}).get("source", {}).get("commit")
        entries[name] = snapshot(name, spec, git_dirs[repo], args.helm and shutil.which(args.helm) or args.helm, pinned)
        print(f"{name} {entries[name]['version']} (app {entries[name]['appVersion']}): {len(entries[name]['keys'])} keys")
    header = ("# Generated by deploy/helm/tools/snapshot_keys.py: do not edit. For each pinned chart, the key\n"
              "# paths its values.yaml/values.schema.json accept and what it renders with our values.\n")
    body = yaml.safe_dump({"charts": [entries[n] for n in CHARTS if n in entries]}, sort_keys=False, width=200)
    LOCK.write_text(header + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
