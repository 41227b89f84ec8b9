// Makes one tool call as an MCP task (the io.modelcontextprotocol/tasks extension) with the
// official TypeScript SDK 1.x over a 2025-11-25 session: the client declares the extension,
// gets a task handle instead of a held-open request, and polls `tasks/get` until the task
// completes. Prints one JSON report on stdout (tests/e2e/approvals.rs asserts on it).
//
//   node task-call.mjs --url URL --token T --call TOOL --args JSON
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResultSchema } from "@modelcontextprotocol/sdk/types.js";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    call: { type: "string" },
    args: { type: "string", default: "{}" },
  },
});

const report = { polls: 0 };
try {
  const client = new Client(
    { name: "warden-e2e-tasks", version: "1.0.0" },
    { capabilities: { extensions: { "io.modelcontextprotocol/tasks": {} } } },
  );
  const transport = new StreamableHTTPClientTransport(new URL(values.url), {
    requestInit: { headers: { Authorization: `Bearer ${values.token}` } },
  });
  await client.connect(transport);
  report.serverTasks =
    client.getServerCapabilities()?.extensions?.["io.modelcontextprotocol/tasks"] !== undefined;
  const started = Date.now();
  const first = await client.request(
    { method: "tools/call", params: { name: values.call, arguments: JSON.parse(values.args) } },
    ResultSchema,
  );
  report.firstAfterMs = Date.now() - started;
  report.first = first;
  let r = first;
  while (r.status === "working" || r.status === "input_required") {
    await new Promise((s) => setTimeout(s, Math.min(r.pollIntervalMs ?? 1000, 1000)));
    r = await client.request({ method: "tasks/get", params: { taskId: first.taskId } }, ResultSchema);
    report.polls += 1;
  }
  report.final = r;
  await client.close();
} catch (e) {
  report.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(report));
