// Drives a running warden gateway with the official TypeScript MCP SDKs and prints one JSON
// report on stdout. The Rust end-to-end tests (tests/e2e/gateway.rs) run this and assert on
// the report.
//
//   node mcp-check.mjs --url URL [--token T] --client v1|v2-legacy|v2-modern|v1-stdio
//                      [--bridge PATH_TO_WARDEN] [--call TOOL --args JSON]
//
// v1        @modelcontextprotocol/sdk 1.x (protocol 2025-11-25: initialize, session, SSE)
// v2-legacy @modelcontextprotocol/client 2.x, legacy negotiation
// v2-modern @modelcontextprotocol/client 2.x pinned to 2026-07-28 (stateless)
// v1-stdio  @modelcontextprotocol/sdk 1.x stdio client launching `warden connect`
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    client: { type: "string", default: "v1" },
    bridge: { type: "string" },
    call: { type: "string" },
    args: { type: "string", default: "{}" },
  },
});

async function makeClient(kind) {
  const headers = values.token ? { Authorization: `Bearer ${values.token}` } : {};
  if (kind === "v1-stdio") {
    const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
    const { StdioClientTransport } = await import("@modelcontextprotocol/sdk/client/stdio.js");
    const client = new Client({ name: "warden-e2e-stdio", version: "1.0.0" });
    const env = { ...process.env, WARDEN_URL: values.url };
    if (values.token) env.WARDEN_TOKEN = values.token;
    const transport = new StdioClientTransport({
      command: values.bridge,
      args: ["connect"],
      env,
      stderr: "inherit",
    });
    return { client, transport };
  }
  if (kind === "v1") {
    const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
    const { StreamableHTTPClientTransport } = await import(
      "@modelcontextprotocol/sdk/client/streamableHttp.js"
    );
    const client = new Client({ name: "warden-e2e-v1", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(values.url), {
      requestInit: { headers },
    });
    return { client, transport };
  }
  const { Client, StreamableHTTPClientTransport } = await import("@modelcontextprotocol/client");
  const mode = kind === "v2-modern" ? { pin: "2026-07-28" } : "legacy";
  const client = new Client(
    { name: `warden-e2e-${kind}`, version: "1.0.0" },
    { versionNegotiation: { mode } },
  );
  const transport = new StreamableHTTPClientTransport(new URL(values.url), {
    requestInit: { headers },
  });
  return { client, transport };
}

const report = { client: values.client };
try {
  const { client, transport } = await makeClient(values.client);
  try {
    await client.connect(transport);
  } catch (e) {
    report.connectError = String(e?.message ?? e);
    report.connectErrorCode = e?.code ?? null;
    console.log(JSON.stringify(report));
    process.exit(0);
  }
  report.protocolVersion =
    client.getNegotiatedProtocolVersion?.() ?? transport.protocolVersion ?? null;
  report.sessionId = transport.sessionId ?? null;
  const { tools } = await client.listTools();
  report.tools = tools.map((t) => ({
    name: t.name,
    hasOutputSchema: !!t.outputSchema,
    readOnly: t.annotations?.readOnlyHint ?? null,
  }));
  report.stats = await client.callTool({
    name: "warden_text__stats",
    arguments: { text: "hello warden world" },
  });
  report.hash = await client.callTool({
    name: "warden_text__hash",
    arguments: { text: "abc" },
  });
  // A tool the policy may hide: a JSON-RPC error is reported, not thrown.
  try {
    report.http = await client.callTool({
      name: "warden_http__get_json",
      arguments: { url: "https://example.com/data.json" },
    });
  } catch (e) {
    report.http = { code: e?.code ?? null, message: String(e?.message ?? e) };
  }
  report.badArgs = await client.callTool({
    name: "warden_text__stats",
    arguments: { text: 42 },
  });
  if (values.call) {
    // One more tool, named by the test (e.g. a skill it just installed).
    report.call = await client.callTool({ name: values.call, arguments: JSON.parse(values.args) });
  }
  try {
    await client.callTool({ name: "warden_nope__nothing", arguments: {} });
    report.unknownTool = "accepted";
  } catch (e) {
    report.unknownTool = { code: e?.code ?? null, message: String(e?.message ?? e) };
  }
  await client.close();
} catch (e) {
  report.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(report));
