// Drives the web desk in headless Chromium (Debian's /usr/bin/chromium, through playwright-core)
// as an approver would, while an agent's call waits for the decision, and prints one JSON
// report on stdout. The Rust end-to-end test (tests/e2e/desk.rs) runs it and asserts on it.
//
//   node desk-check.mjs --base http://127.0.0.1:PORT --admin-token A --agent-token B \
//                       --screenshot PATH
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values } = parseArgs({
  options: {
    base: { type: "string" },
    "admin-token": { type: "string" },
    "agent-token": { type: "string" },
    screenshot: { type: "string" },
  },
});
const base = values.base;
// Text an agent controls: the desk must show it as text, never run it.
const REASON = 'closing the books <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';

// The agent's call: a stateless (2026-07-28) tools/call that waits for the decision.
function agentCall(args) {
  const body = {
    jsonrpc: "2.0",
    id: 7,
    method: "tools/call",
    params: {
      name: "warden_text__hash",
      arguments: args,
      _meta: {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "warden/reason": REASON,
      },
    },
  };
  return fetch(`${base}/mcp`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${values["agent-token"]}`,
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      "MCP-Protocol-Version": "2026-07-28",
      "Mcp-Method": "tools/call",
      "Mcp-Name": "warden_text__hash",
    },
    body: JSON.stringify(body),
  }).then((r) => r.json());
}

const report = { consoleErrors: [] };
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (m) => {
    if (m.type() === "error") report.consoleErrors.push(m.text());
  });
  const first = await page.goto(`${base}/desk`);
  report.csp = first.headers()["content-security-policy"] ?? null;

  // A wrong token is refused on the sign-in page.
  await page.fill("#token", "wdn_adm_not-a-real-token");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  report.badLogin = (await page.textContent(".form-error"))?.trim() ?? "";

  await page.fill("#token", values["admin-token"]);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  await page.waitForSelector("#tasks", { state: "attached" });
  await page.waitForFunction(() => !document.getElementById("live").classList.contains("off"));
  // The page must not reload from here on: the task arrives over the live stream.
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  report.pendingBefore = await page.$$eval('li.task[data-state="pending"]', (n) => n.length);

  const call = agentCall({ text: "desk" });
  const started = Date.now();
  await page.waitForSelector('li.task[data-state="pending"]', { timeout: 30000 });
  report.appearedAfterMs = Date.now() - started;
  report.sameDocument = await page.evaluate(() => window.__sameDocument === true);
  const id = await page.getAttribute('li.task[data-state="pending"]', "data-task-id");
  report.taskId = id;
  await page.click(`li.task[data-task-id="${id}"]`);
  report.reasonText = (await page.textContent("blockquote.reason")) ?? "";
  report.injected = await page.evaluate(
    () =>
      (window.__pwned ?? null) !== null ||
      document.querySelectorAll("#detail img, #detail script").length > 0,
  );
  report.argumentsShown = (await page.textContent("table.args")) ?? "";
  await page.keyboard.press("r");
  report.rawShown = (await page.textContent("pre.raw")) ?? "";
  await page.keyboard.press("r");

  // CSRF: a change without the page's token is refused.
  report.csrfStatus = await page.evaluate(async (taskId) => {
    const r = await fetch(`/desk/api/approvals/${taskId}/approve`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    return r.status;
  }, id);

  // Approve with the keyboard; the agent's waiting call gets the result.
  await page.keyboard.press("a");
  const answer = await call;
  report.result = answer.result ?? answer;
  // The task leaves the pending list and shows in history.
  await page.waitForSelector(`li.task[data-task-id="${id}"]`, { state: "detached" });
  await page.keyboard.press("2");
  await page.waitForSelector(`li.task[data-task-id="${id}"][data-state="executed"]`, { timeout: 30000 });
  report.historyState = await page.getAttribute(`li.task[data-task-id="${id}"]`, "data-state");
  await page.click(`li.task[data-task-id="${id}"]`);
  report.sameDocumentAfter = await page.evaluate(() => window.__sameDocument === true);
  if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });

  // Signing out ends the session: the API answers 401 afterwards.
  await page.click("#logout");
  await page.waitForSelector("#token");
  report.afterLogout = await page.evaluate(async () => (await fetch("/desk/api/approvals")).status);
} catch (e) {
  report.error = String(e?.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
