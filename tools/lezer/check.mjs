// Parses LogQL and TraceQL with the grammars Grafana's own query editors use, and reports every
// query whose parse tree has an error node (with its position). Input on stdin:
//   {"logql": ["..."], "traceql": ["..."]}   →   stdout: [{"language", "query", "error"}]
import { parser as logql } from "@grafana/lezer-logql";
import { parser as traceql } from "@grafana/lezer-traceql";

const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => (data += chunk));
  process.stdin.on("end", () => resolve(data));
}));

function firstError(parser, query) {
  let error = null;
  parser.parse(query).iterate({
    enter(node) {
      if (error === null && node.type.isError) {
        error = `syntax error at ${node.from}: "${query.slice(Math.max(0, node.from - 15), node.to + 15)}"`;
      }
    },
  });
  return error;
}

const results = [];
for (const [language, parser] of [["logql", logql], ["traceql", traceql]]) {
  for (const query of input[language] ?? []) {
    results.push({ language, query, error: query.trim() === "" ? "empty query" : firstError(parser, query) });
  }
}
console.log(JSON.stringify(results));
