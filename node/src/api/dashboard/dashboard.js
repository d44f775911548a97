// skein's dashboard: polls /api/v1/overview (one request per refresh) and
// renders it. Plain DOM, no framework, no build step; every value goes in
// through textContent, never as HTML.
"use strict";

const STATUSES = ["pending", "blocked", "leased", "succeeded", "dead", "cancelled"];
const ENDED = ["succeeded", "dead", "cancelled"];
const REFRESH_MS = 2000;
const ROWS = 500;

const $ = (id) => document.getElementById(id);

/** An element with attributes (`data-*`, `class`, ...) and children (nodes or text). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "style") e.setAttribute("style", v);
    else if (k === "title") e.title = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

const pad = (n) => String(n).padStart(2, "0");
function fmtTime(ms) {
  if (ms === null || ms === undefined) return "-";
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}
function fmtDur(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${ms} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
const statusBadge = (s) => el("span", { class: `status s-${s}` }, s);

const filters = { queue: $("f-queue"), status: $("f-status"), owner: $("f-owner") };

/** Keeps a select's options in step with `values`, keeping the choice. */
function setOptions(select, values) {
  const chosen = select.value;
  const want = ["", ...values];
  const have = Array.from(select.options).map((o) => o.value);
  if (want.join("\u0000") !== have.join("\u0000")) {
    select.replaceChildren(...want.map((v) => el("option", { value: v }, v === "" ? "all" : v)));
  }
  select.value = want.includes(chosen) ? chosen : "";
}

// The filters start from the page's query string (?queue=&status=&owner=),
// and the query string follows the filters, so a view can be linked to.
const initial = new URLSearchParams(location.search);
for (const [k, sel] of Object.entries(filters)) {
  const v = initial.get(k);
  if (v) {
    if (!Array.from(sel.options).some((o) => o.value === v)) sel.appendChild(el("option", { value: v }, v));
    sel.value = v;
  }
  sel.addEventListener("change", () => {
    const q = new URLSearchParams();
    for (const [k2, s2] of Object.entries(filters)) if (s2.value) q.set(k2, s2.value);
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    refresh();
  });
}

function renderCounts(o) {
  // Every queue's counts, or the chosen queue's.
  let totals = o.totals;
  if (filters.queue.value) {
    const q = o.queues.find((q) => q.name === filters.queue.value);
    totals = q ? q.counts : {};
  }
  const total = STATUSES.reduce((n, s) => n + (totals[s] || 0), 0);
  $("counts").replaceChildren(
    el("span", { class: "count", style: "background:#1d2330", "data-status": "total", "data-count": total }, "total", el("b", {}, total)),
    ...STATUSES.map((s) =>
      el("span", { class: `count s-${s}`, "data-status": s, "data-count": totals[s] || 0 }, s, el("b", {}, totals[s] || 0)),
    ),
  );
  $("queues").replaceChildren(
    ...o.queues.map((q) => {
      const n = (s) => q.counts[s] || 0;
      const all = STATUSES.reduce((a, s) => a + n(s), 0);
      const done = ENDED.reduce((a, s) => a + n(s), 0);
      const pct = all ? Math.round((100 * done) / all) : 100;
      const bar = el("div", { class: "bar", title: STATUSES.map((s) => `${s} ${n(s)}`).join(", ") },
        ...["succeeded", "dead", "cancelled", "leased", "blocked", "pending"].filter((s) => n(s) > 0)
          .map((s) => el("span", { class: `s-${s}`, style: `width:${(100 * n(s)) / all}%` })));
      return el("div", { class: "queue", "data-queue": q.name, "data-done": done, "data-total": all },
        el("span", {}, q.name, q.paused ? el("span", { class: "muted" }, " (paused)") : null),
        bar,
        el("span", { class: "muted" }, `${done} of ${all} done (${pct}%)`, n("leased") ? ` · ${n("leased")} running` : ""));
    }),
  );
}

function renderPlans(o) {
  const owner = filters.owner.value;
  const plans = (o.plans || []).filter((p) => !owner || ownerMatches(p.owner, owner));
  $("plans-section").hidden = (o.plans || []).length === 0;
  $("plans").replaceChildren(
    ...plans.map((p) => {
      const pct = Math.round(100 * (p.fraction || 0));
      return el("div", { class: "queue", "data-plan": p.entity_ref, "data-status": p.status },
        el("span", { title: p.owner ? `owner ${p.owner}` : "" }, p.entity_ref),
        el("div", { class: "bar" }, el("span", { class: `s-${p.status}`, style: `width:${p.status === "never_run" ? 0 : Math.max(pct, 2)}%` })),
        el("span", {}, statusBadge(p.status), ` ${pct}%`, p.owner ? el("span", { class: "muted" }, ` · ${p.owner}`) : null,
          p.message ? el("span", { class: "muted" }, ` · ${p.message}`) : null));
    }),
  );
}

function ownerMatches(owner, wanted) {
  if (!owner) return false;
  const short = (s) => s.split(":").pop().split("/").pop().toLowerCase();
  return owner.toLowerCase() === wanted.toLowerCase() || short(owner) === short(wanted);
}

function renderNodes(o) {
  $("nodes").tBodies[0].replaceChildren(
    ...o.nodes.map((n) =>
      el("tr", { "data-node-id": n.id, "data-role": n.role, "data-health": n.health, "data-leases": n.leases_held },
        el("td", {}, `node ${n.id}`, n.id === o.node_id ? el("span", { class: "muted" }, " (this page)") : null),
        el("td", {}, n.role === "leader" ? el("b", {}, "leader") : n.role),
        el("td", { class: `h-${n.health}` }, n.health, n.draining ? " · draining" : ""),
        el("td", { class: "num" }, n.slots ?? "-"),
        el("td", { class: "num" }, n.leases_held),
        el("td", {}, n.heartbeat_age_ms === null || n.heartbeat_age_ms === undefined ? "never" : `${fmtDur(n.heartbeat_age_ms)} ago`),
        el("td", {}, n.http_addr),
        el("td", { class: "num" }, n.matched_index ?? "-"))),
  );
}

function renderStuck(o) {
  const stuck = o.stuck || { tasks: [], silent_nodes: [] };
  const owner = filters.owner.value;
  const rows = stuck.tasks.filter((t) => !owner || ownerMatches(t.owner, owner));
  $("stuck-count").textContent = rows.length;
  $("stuck-count").className = rows.length ? "badge hot" : "badge";
  $("stuck-empty").hidden = rows.length > 0;
  $("stuck").tBodies[0].replaceChildren(
    ...rows.map((t) =>
      el("tr", { class: "stuck", "data-task-id": t.id, "data-status": t.status, "data-reasons": t.reasons.map((r) => r.reason).join(" ") },
        el("td", {}, t.name),
        el("td", {}, t.queue),
        el("td", {}, statusBadge(t.status)),
        el("td", { class: "num" }, t.node ?? "-"),
        el("td", { class: "num" }, `${t.attempt}/${t.max_attempts}`),
        el("td", { class: "wrap" }, t.why.join("; ")))),
  );
  $("silent").textContent = stuck.silent_nodes.length
    ? "Silent nodes: " + stuck.silent_nodes.map((n) => `node ${n.node} (no heartbeat for ${fmtDur(n.silent_ms)}, ${n.leases} leases)`).join(", ")
    : "";
}

function renderTasks(o) {
  const owner = filters.owner.value;
  const rows = o.tasks.filter((t) => !owner || ownerMatches(t.owner, owner));
  $("tasks").tBodies[0].replaceChildren(
    ...rows.map((t) => {
      const note = t.status === "leased" && t.progress
        ? `${Math.round(100 * t.progress.fraction)}% ${t.progress.message}`
        : t.status !== "succeeded" ? t.last_error || "" : "";
      return el("tr", { "data-task-id": t.id, "data-status": t.status, "data-node": t.node ?? "" },
        el("td", { title: `${t.kind} #${t.id}` }, t.name),
        el("td", {}, statusBadge(t.status)),
        el("td", { class: "num" }, t.node ?? "-"),
        el("td", { class: "num" }, `${t.attempt}/${t.max_attempts}`),
        el("td", {}, fmtTime(t.started_ms)),
        el("td", {}, fmtTime(t.completed_ms)),
        el("td", { class: "num" }, fmtDur(t.duration_ms)),
        el("td", { class: "wrap" }, note),
        el("td", {}, t.queue),
        el("td", {}, t.owner || "-"));
    }),
  );
  const shown = rows.length;
  $("rows-note").textContent = o.truncated
    ? `Showing the first ${shown} of ${o.tasks_total} tasks (oldest first); narrow the filters to see others.`
    : `${shown} task${shown === 1 ? "" : "s"}.`;
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const q = new URLSearchParams({ limit: String(ROWS) });
  if (filters.queue.value) q.set("queue", filters.queue.value);
  if (filters.status.value) q.set("status", filters.status.value);
  if (filters.owner.value) q.set("owner", filters.owner.value);
  try {
    const r = await fetch(`/api/v1/overview?${q}`, { cache: "no-store" });
    // No token (or a revoked one): the sign-in page sets the cookie.
    if (r.status === 401) { window.location.assign("/signin"); return; }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
    render(body);
    $("error").hidden = true;
  } catch (e) {
    $("error").textContent = `refresh failed: ${e.message}`;
    $("error").hidden = false;
  }
  if ($("f-live").checked) timer = setTimeout(refresh, REFRESH_MS);
}
$("f-live").addEventListener("change", refresh);

function render(o) {
  setOptions(filters.queue, o.queues.map((q) => q.name));
  setOptions(filters.owner, o.owners);
  $("summary").textContent =
    `node ${o.node_id} · leader ${o.leader ?? "none"} · term ${o.term} · applied ${o.applied_index ?? "-"}`;
  $("updated").textContent = `updated ${fmtTime(o.now_ms)}`;
  renderCounts(o);
  renderPlans(o);
  renderNodes(o);
  renderStuck(o);
  renderTasks(o);
  const b = document.body.dataset;
  b.loaded = "1";
  b.nodeId = o.node_id;
  b.appliedIndex = o.applied_index ?? "";
  b.tasksTotal = o.tasks_total;
}

refresh();
