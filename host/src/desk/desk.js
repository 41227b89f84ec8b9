// warden desk: the live list of approval tasks and the approve / deny / modify actions.
// Everything a task carries was written by an agent or a skill: it is shown with
// textContent only, never parsed as HTML.
"use strict";

const csrf = document.querySelector('meta[name="warden-csrf"]').content;
const state = { tasks: new Map(), view: "pending", selected: null, raw: false, mode: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "on") for (const [ev, f] of Object.entries(v)) node.addEventListener(ev, f);
    else node[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function when(secs) {
  if (!secs) return "-";
  return new Date(secs * 1000).toLocaleString();
}

function ago(secs) {
  const d = Math.max(0, Math.round(Date.now() / 1000 - secs));
  if (d < 60) return `${d}s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  return `${Math.round(d / 3600)} h ago`;
}

function left(secs) {
  const d = Math.round(secs - Date.now() / 1000);
  if (d <= 0) return "expired";
  if (d < 60) return `${d}s left`;
  if (d < 3600) return `${Math.round(d / 60)} min left`;
  return `${Math.round(d / 3600)} h left`;
}

function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "toast show bad" : "toast show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = "toast"), 4000);
}

async function api(method, path, body) {
  const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Warden-CSRF"] = csrf;
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    window.location.assign("/desk");
    throw new Error("signed out");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function pending(t) {
  return t.state === "pending";
}

function visible() {
  const all = [...state.tasks.values()];
  const list = state.view === "pending" ? all.filter(pending) : all.filter((t) => !pending(t));
  return list.sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
}

const VOTED = { approve: "approved", deny: "denied", modify: "modified and approved" };

// `required`, `2-of:any`, `2-of:group:finance` in words.
function quorum(q) {
  if (q === "required") return "1 approver";
  const m = /^(\d+)-of:(?:group:(.+)|any)$/.exec(q);
  if (!m) return q;
  const who = m[1] === "1" ? "approver" : "approvers";
  return m[2] ? `${m[1]} ${who} of group ${m[2]}` : `${m[1]} ${who}`;
}

function agentName(t) {
  return t.agent.split("/").pop();
}

function risks(t) {
  const a = t.annotations || {};
  const out = [];
  if (a.destructiveHint === true) out.push(["destructive", "May change or delete data"]);
  if (a.openWorldHint === true) out.push(["open world", "Reaches systems outside"]);
  if (a.readOnlyHint === true) out.push(["read-only", "Declared read-only"]);
  return out;
}

function renderList() {
  const list = visible();
  const ol = $("tasks");
  ol.replaceChildren(
    ...list.map((t) =>
      el(
        "li",
        {
          class: `task ${t.state}${t.id === state.selected ? " selected" : ""}`,
          "data-task-id": t.id,
          "data-state": t.state,
          tabIndex: 0,
          on: { click: () => select(t.id) },
        },
        el("div", { class: "task-head" },
          el("span", { class: "tool" }, t.tool),
          el("span", { class: `pill ${t.state}` }, t.state)),
        el("div", { class: "task-sub" },
          el("span", {}, agentName(t)),
          el("span", {}, " · "),
          el("span", {}, pending(t) ? left(t.expires_at) : ago(t.decided_at || t.created_at))),
        risks(t).some(([r]) => r !== "read-only")
          ? el("div", { class: "risks" }, risks(t).filter(([r]) => r !== "read-only").map(([r]) => el("span", { class: "risk" }, r)))
          : null,
      ),
    ),
  );
  const all = [...state.tasks.values()];
  $("count-pending").textContent = all.filter(pending).length;
  $("count-history").textContent = all.filter((t) => !pending(t)).length;
  $("empty").hidden = list.length > 0;
  $("empty").textContent =
    state.view === "pending"
      ? "Nothing is waiting for you. New requests appear here as they arrive."
      : "No decided requests yet.";
  for (const b of document.querySelectorAll(".tabs button")) {
    b.setAttribute("aria-selected", String(b.dataset.view === state.view));
  }
}

function argumentsView(args) {
  if (state.raw || args === null || typeof args !== "object" || Array.isArray(args)) {
    return el("pre", { class: "raw" }, JSON.stringify(args, null, 2));
  }
  const rows = Object.entries(args).map(([k, v]) =>
    el("tr", {},
      el("th", { scope: "row" }, k),
      el("td", {}, typeof v === "string" ? el("span", { class: "str" }, v) : el("code", {}, JSON.stringify(v)))),
  );
  if (rows.length === 0) return el("p", { class: "muted" }, "No arguments.");
  return el("table", { class: "args" }, el("tbody", {}, rows));
}

function renderDetail() {
  const pane = $("detail");
  const t = state.tasks.get(state.selected);
  if (!t) {
    pane.replaceChildren(el("p", { class: "empty" }, "Select a request to see what the agent wants to do."));
    return;
  }
  const modified = t.modified_arguments !== null && t.modified_arguments !== undefined;
  const parts = [
    el("div", { class: "detail-head" },
      el("h2", {}, `${agentName(t)} wants to run `, el("code", {}, t.tool)),
      el("span", { class: `pill ${t.state}` }, t.state)),
    el("p", { class: "desc" }, t.description),
    t.reason
      ? el("blockquote", { class: "reason" }, el("span", { class: "label" }, "The agent says: "), t.reason)
      : el("p", { class: "muted" }, "The agent gave no reason."),
    risks(t).length
      ? el("div", { class: "risks" }, risks(t).map(([r, title]) => el("span", { class: r === "read-only" ? "risk calm" : "risk", title: `${title} (as the skill declares it)` }, r)))
      : null,
    el("h3", {}, modified ? "Arguments (modified)" : "Arguments",
      el("button", { class: "link", on: { click: toggleRaw } }, state.raw ? "form" : "raw JSON")),
    argumentsView(modified ? t.modified_arguments : t.arguments),
    modified ? el("details", {}, el("summary", {}, "What the agent sent"), el("pre", { class: "raw" }, JSON.stringify(t.arguments, null, 2))) : null,
    el("dl", { class: "facts" },
      el("dt", {}, "Agent"), el("dd", {}, t.agent),
      el("dt", {}, "Needs"), el("dd", {}, (t.quorums || []).map(quorum).join(" and ")),
      t.missing && t.missing.length ? [el("dt", {}, "Still missing"), el("dd", {}, t.missing.join(" and "))] : null,
      el("dt", {}, "Skill"), el("dd", {}, `${t.skill} `, el("code", { title: t.skill_digest }, (t.skill_digest || "").slice(0, 16))),
      el("dt", {}, "Rules"), el("dd", {}, `${(t.policies || []).join(", ")} (policy v${t.policy_version})`),
      el("dt", {}, "Asked"), el("dd", {}, when(t.created_at)),
      el("dt", {}, pending(t) ? "Expires" : "Decided"), el("dd", {}, pending(t) ? `${when(t.expires_at)} (${left(t.expires_at)})` : when(t.decided_at)),
      t.note ? [el("dt", {}, "Note"), el("dd", {}, t.note)] : null,
    ),
    (t.votes || []).length
      ? el("ul", { class: "votes" }, t.votes.map((v) => el("li", {}, el("strong", {}, v.approver), ` ${VOTED[v.vote] || v.vote} at ${when(v.at)}`, v.note ? ` — ${v.note}` : "")))
      : null,
  ];
  if (pending(t)) parts.push(actions(t));
  pane.replaceChildren(...parts.filter(Boolean));
}

function actions(t) {
  if (state.mode === "deny") {
    const note = el("textarea", { id: "note", rows: 3, placeholder: "Why? The agent is told this." });
    setTimeout(() => note.focus());
    note.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submitDeny(t);
    });
    return el("div", { class: "actions editing" },
      el("label", { htmlFor: "note" }, "Note for the agent"), note,
      el("div", { class: "row" },
        el("button", { class: "danger", on: { click: () => submitDeny(t) } }, "Deny"),
        el("button", { class: "quiet", on: { click: cancel } }, "Cancel")));
  }
  if (state.mode === "modify") {
    const args = el("textarea", { id: "args", rows: 8, spellcheck: false, value: JSON.stringify(t.modified_arguments || t.arguments, null, 2) });
    setTimeout(() => args.focus());
    args.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submitModify(t);
    });
    return el("div", { class: "actions editing" },
      el("label", { htmlFor: "args" }, "Arguments to run with (JSON)"), args,
      el("div", { class: "row" },
        el("button", { class: "primary", on: { click: () => submitModify(t) } }, "Modify and approve"),
        el("button", { class: "quiet", on: { click: cancel } }, "Cancel")));
  }
  return el("div", { class: "actions" },
    el("button", { class: "primary", id: "approve", on: { click: () => approve(t) } }, "Approve ", el("kbd", {}, "a")),
    el("button", { class: "danger", on: { click: () => setMode("deny") } }, "Deny ", el("kbd", {}, "d")),
    el("button", { class: "quiet", on: { click: () => setMode("modify") } }, "Modify ", el("kbd", {}, "m")));
}

function render() {
  renderList();
  renderDetail();
}

// Live events and vote answers arrive in either order: an older view of a task (a lower
// revision) never replaces a newer one.
function upsert(t) {
  const known = state.tasks.get(t.id);
  if (known && (known.revision ?? 0) > (t.revision ?? 0)) return;
  state.tasks.set(t.id, t);
}

function select(id) {
  state.selected = id;
  state.mode = null;
  render();
  const node = document.querySelector(`[data-task-id="${CSS.escape(id)}"]`);
  if (node) node.scrollIntoView({ block: "nearest" });
}

function move(step) {
  const list = visible();
  if (!list.length) return;
  const i = list.findIndex((t) => t.id === state.selected);
  const next = i < 0 ? 0 : Math.min(list.length - 1, Math.max(0, i + step));
  select(list[next].id);
}

function setView(view) {
  state.view = view;
  const list = visible();
  if (!list.some((t) => t.id === state.selected)) state.selected = list.length ? list[0].id : null;
  state.mode = null;
  render();
}

function setMode(mode) {
  state.mode = mode;
  renderDetail();
}

function cancel() {
  setMode(null);
}

function toggleRaw() {
  state.raw = !state.raw;
  renderDetail();
}

async function vote(t, action, body, done) {
  try {
    const updated = await api("POST", `/desk/api/approvals/${encodeURIComponent(t.id)}/${action}`, body);
    upsert(updated);
    state.mode = null;
    toast(done(updated));
    if (!pending(updated)) {
      const list = visible();
      state.selected = list.length ? list[0].id : null;
    }
    render();
  } catch (e) {
    toast(e.message, true);
  }
}

function approve(t) {
  return vote(t, "approve", {}, (u) =>
    u.state === "approved" ? "Approved: the agent's call runs now." : `Your approval counted; still missing ${u.missing.join(" and ")}.`);
}

function submitDeny(t) {
  const note = $("note").value.trim();
  if (!note) {
    toast("A denial needs a note: the agent is told why.", true);
    return;
  }
  return vote(t, "deny", { note }, () => "Denied: the agent is told your note.");
}

function submitModify(t) {
  let args;
  try {
    args = JSON.parse($("args").value);
  } catch (e) {
    toast(`Not valid JSON: ${e.message}`, true);
    return;
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    toast("The arguments must be a JSON object.", true);
    return;
  }
  return vote(t, "modify", { arguments: args }, (u) =>
    u.state === "approved" ? "Modified and approved: the call runs with your arguments." : "Modified; more approvals are needed.");
}

async function load() {
  const data = await api("GET", "/desk/api/approvals?state=all&limit=500");
  state.tasks.clear();
  for (const t of data.approvals) upsert(t);
  if (!state.selected) {
    const list = visible();
    state.selected = list.length ? list[0].id : null;
  }
  render();
}

function live() {
  const source = new EventSource("/desk/api/events");
  const dot = $("live");
  source.addEventListener("open", () => dot.classList.remove("off"));
  source.addEventListener("error", () => dot.classList.add("off"));
  source.addEventListener("task", (e) => {
    const t = JSON.parse(e.data);
    const isNew = !state.tasks.has(t.id);
    upsert(t);
    if (!state.selected && state.view === "pending" && pending(t)) state.selected = t.id;
    if (isNew && pending(t)) toast(`New request: ${agentName(t)} wants to run ${t.tool}`);
    if (state.mode && t.id === state.selected) renderList();
    else render();
  });
  source.addEventListener("resync", () => load());
}

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement;
  if (e.key === "Escape") {
    if (state.mode) cancel();
    return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = state.tasks.get(state.selected);
  switch (e.key) {
    case "j":
    case "ArrowDown":
      move(1);
      break;
    case "k":
    case "ArrowUp":
      move(-1);
      break;
    case "1":
      setView("pending");
      break;
    case "2":
      setView("history");
      break;
    case "r":
      toggleRaw();
      break;
    case "?":
      $("help").showModal();
      break;
    case "a":
      if (t && pending(t)) approve(t);
      break;
    case "d":
      if (t && pending(t)) setMode("deny");
      break;
    case "m":
      if (t && pending(t)) setMode("modify");
      break;
    default:
      return;
  }
  e.preventDefault();
});

for (const b of document.querySelectorAll(".tabs button")) {
  b.addEventListener("click", () => setView(b.dataset.view));
}
$("logout").addEventListener("click", async () => {
  await api("POST", "/desk/logout", {}).catch(() => {});
  window.location.assign("/desk");
});
setInterval(renderList, 15000);

load().then(live, (e) => toast(e.message, true));
