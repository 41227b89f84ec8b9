// Makes one tool call that needs a human's approval, the way an agent would, with the official
// TypeScript MCP SDK (1.x, Streamable HTTP): it states a reason in `_meta`, listens for progress
// notifications while the gateway waits for a decision, and prints one JSON report on stdout.
// The Rust end-to-end tests (tests/e2e/approvals.rs) run it and decide the task meanwhile.
//
//   node approval-call.mjs --url URL --token T --call TOOL --args JSON --reason TEXT
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    call: { type: "string" },
    args: { type: "string", default: "{}" },
    reason: { type: "string" },
  },
});

const report = { progress: [] };
try {
  const client = new Client({ name: "warden-e2e-approvals", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(values.url), {
    requestInit: { headers: { Authorization: `Bearer ${values.token}` } },
  });
  await client.connect(transport);
  const params = { name: values.call, arguments: JSON.parse(values.args) };
  if (values.reason) params._meta = { "warden/reason": values.reason };
  report.result = await client.callTool(params, undefined, {
    timeout: 120000,
    resetTimeoutOnProgress: true,
    onprogress: (p) => report.progress.push(p),
  });
  await client.close();
} catch (e) {
  report.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(report));
