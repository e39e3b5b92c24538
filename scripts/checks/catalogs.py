#!/usr/bin/env python3
"""The query-catalog check (fails the build). For queries/{metrics,logs,traces,profiles}.md:
every fenced block tagged promql, logql, traceql or pyroscope parses with its real grammar (the
same parsers as the dashboard lint), PromQL reads only metrics something produces, profile
blocks use a profile type id the app pushes with a valid selector, an error ratio shows 0 rather than
nothing when nothing failed, a LogQL pattern has a named capture, TraceQL names only
spans and attributes that exist, and each catalog has at least the
entries the workshop promises (25 / 20 / 20 / 8). The docs name only UI elements Grafana 13.2
has (check_ui_words). `catalog_promql()` gives scripts/e2e.py the
PromQL to execute against live Prometheus.
"""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboards  # noqa: E402  (shared parsers and the metric catalog)

ROOT = Path(__file__).resolve().parents[2]
MINIMUM = {"promql": 25, "logql": 20, "traceql": 20, "pyroscope": 8}
FENCE = re.compile(r"```(promql|logql|traceql|pyroscope)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(language, file:line, query) of every tagged block."""
    out = []
    for path in sorted((ROOT / "queries").glob("*.md")):
        text = path.read_text()
        for m in FENCE.finditer(text):
            line = text[: m.start()].count("\n") + 1
            out.append((m.group(1), f"{path.relative_to(ROOT)}:{line}", m.group(2).strip()))
    return out


def catalog_promql() -> list[tuple[str, str, bool]]:
    """(where, query, needs_something) of every PromQL entry; an entry whose heading says
    "(needs …)" returns data only in that situation (Tempo's generator, an active fault)."""
    out = []
    for language, where, query in blocks():
        if language != "promql":
            continue
        path, line = where.split(":")
        lines = (ROOT / path).read_text().splitlines()[: int(line)]
        heading = next((l for l in reversed(lines) if l.startswith("### ")), "")
        out.append((where, query, "(needs" in heading))
    return out


def check() -> list[str]:
    problems = []
    found = blocks()
    for language, minimum in MINIMUM.items():
        count = sum(1 for b in found if b[0] == language)
        if count < minimum:
            problems.append(f"queries: {count} {language} entries, the catalog promises at least {minimum}")
    promql = [(w, q) for lang, w, q in found if lang == "promql"]
    for language, where, query in found:
        if language == "pyroscope":
            m = re.fullmatch(r"([a-z_]+:[a-z_]+:[a-z_]+:[a-z_]+:[a-z_]+)(\{.*\})", query)
            if not m:
                problems.append(f"{where}: not TYPE{{selector}}: {query!r}")
            elif m.group(1) not in dashboards.contract.profile_types():
                problems.append(f"{where}: profile type {m.group(1)} is not one the app pushes (docs/contracts.md)")
            else:
                promql.append((f"{where} (selector)", m.group(2)))
    metrics = dashboards.known_metrics()
    for (where, _), result in zip(promql, dashboards.parse_promql([q for _, q in promql])):
        if result["error"]:
            problems.append(f"{where}: PromQL does not parse: {result['error']}")
        if not where.endswith("(selector)"):
            problems += [f"{where}: metric {n} is produced by nothing" for n in result["metrics"] if n not in metrics]
    for language, where, query in found:
        if language == "promql":
            problems += dashboards.error_ratio_problems(where, " ".join(query.split()))
        elif language == "logql":
            problems += dashboards.logql_problems(where, query)
        elif language == "traceql":
            problems += dashboards.traceql_problems(where, query)
    logql = [q for lang, _, q in found if lang == "logql"]
    traceql = [q for lang, _, q in found if lang == "traceql"]
    wheres = [w for lang, w, _ in found if lang == "logql"] + [w for lang, w, _ in found if lang == "traceql"]
    for where, result in zip(wheres, dashboards.parse_lezer(logql, traceql)):
        if result["error"]:
            problems.append(f"{where}: {result['language']} does not parse: {result['error']}")
    return problems


def check_labs() -> list[str]:
    """Every query a workshop lab shows is a catalog entry (so it is parsed and run like one),
    and every lab starts a scenario that exists."""
    problems = []
    catalog = {q for _, _, q in blocks()}
    labs = sorted((ROOT / "docs/workshop").glob("0*.md"))
    if len(labs) < 6:
        problems.append(f"docs/workshop: {len(labs)} labs, the workshop promises six")
    for lab in labs:
        text = lab.read_text()
        for m in FENCE.finditer(text):
            if m.group(2).strip() not in catalog:
                problems.append(f"{lab.relative_to(ROOT)}: a {m.group(1)} query that is not in queries/: {m.group(2).strip()[:60]!r}")
        scenario = re.search(r"(?:scenario run|compose run --rm scenario) ([\w-]+)", text)
        if not scenario or not (ROOT / f"load-gen/scenarios/{scenario.group(1)}.toml").exists():
            problems.append(f"{lab.relative_to(ROOT)}: does not start an existing load-gen scenario")
    return problems


# Grafana 13.2 UI names docs must not use, each with why. A phrase is allowed where the same line
# or the next states the condition that makes it true.
UI_WORDS = [
    (re.compile(r"Related metrics", re.I), None,
     "a span has no 'Related metrics' menu: its metrics links are named after the tracesToMetrics queries, in the Links menu"),
    (re.compile(r"View in Tempo", re.I), None,
     "the exemplar link is labelled 'View trace' (urlDisplayLabel in datasources.yaml)"),
    (re.compile(r"diff view|\*Diff\*", re.I), re.compile(r"Drilldown"),
     "Explore's Pyroscope query editor has no diff; Profiles Drilldown has one"),
    (re.compile(r"Profiles for this span"), re.compile(r"pyroscope\.profile\.id"),
     "the link appears only on spans with a pyroscope.profile.id attribute: say so where you mention it"),
]


def check_ui_words() -> list[str]:
    problems = []
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "queries").glob("*.md"))]
    for path in files:
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            window = line + " " + (lines[i + 1] if i + 1 < len(lines) else "")
            for phrase, unless, why in UI_WORDS:
                if phrase.search(line) and not (unless and unless.search(window)):
                    problems.append(f"{rel}:{i + 1}: {why}")
    return problems


def main() -> int:
    problems = check() + check_labs() + check_ui_words()
    for p in problems:
        print(f"catalog: {p}", file=sys.stderr)
    counts = {lang: sum(1 for b in blocks() if b[0] == lang) for lang in MINIMUM}
    print(f"catalogs: {counts}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
