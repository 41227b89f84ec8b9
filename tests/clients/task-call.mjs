// Makes one tool call as an MCP task (the io.modelcontextprotocol/tasks extension) with the
// official TypeScript SDK 1.x over a 2025-11-25 session: the client declares the extension,
// gets a task handle instead of a held-open request, and polls `tasks/get` until the task
// completes. Prints one JSON report on stdout (tests/e2e/approvals.rs asserts on it).
// `--create-only` stops after the task handle; `--resume ID` makes no call and polls the
// task ID from this fresh connection (as a client does after the gateway restarted).
//
//   node task-call.mjs --url URL --token T (--call TOOL --args JSON [--create-only] | --resume ID)
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
    "create-only": { type: "boolean", default: false },
    resume: { type: "string" },
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
  const poll = () =>
    client.request({ method: "tasks/get", params: { taskId: first.taskId } }, ResultSchema);
  let first;
  if (values.resume) {
    first = { taskId: values.resume };
    first = { ...(await poll()), taskId: values.resume };
    report.polls += 1;
  } else {
    first = await client.request(
      { method: "tools/call", params: { name: values.call, arguments: JSON.parse(values.args) } },
      ResultSchema,
    );
  }
  report.firstAfterMs = Date.now() - started;
  report.first = first;
  let r = first;
  while (!values["create-only"] && (r.status === "working" || r.status === "input_required")) {
    await new Promise((s) => setTimeout(s, Math.min(r.pollIntervalMs ?? 1000, 1000)));
    r = await poll();
    report.polls += 1;
  }
  report.final = r;
  await client.close();
} catch (e) {
  report.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(report));
