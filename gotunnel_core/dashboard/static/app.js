// gotunnel dashboard: tunnels, and the inspector's live request list, detail, replay, webhook
// signature verification and HAR export.
// Plain JavaScript with no dependencies: it ships inside the Python package and works offline.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};
const api = async (path, options = {}) => {
  const response = await fetch(path, { headers: { "content-type": "application/json" }, ...options });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
};

const state = { rows: new Map(), shownAt: new Map(), selected: null, detail: null, revealed: false };

// ----- tunnels ---------------------------------------------------------------------------------

async function loadTunnels() {
  const data = await api("/api/tunnels");
  $("#engine").textContent = `engine ${data.engine.name}: ${data.engine.running ? "running" : "not running"}`;
  const list = $("#tunnels");
  list.replaceChildren();
  const select = $("#f-tunnel");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "all tunnels"));
  for (const t of data.tunnels) {
    list.append(el("li", { class: "tunnel", "data-name": t.name },
      el("strong", {}, t.name), " ", el("span", { class: t.inspect ? "badge on" : "badge" }, t.inspect ? `inspected (${t.recorded})` : "not inspected"),
      ...t.urls.map((u) => el("div", { class: "small" }, el("a", { href: u, target: "_blank", rel: "noreferrer" }, u))),
      el("div", { class: "small muted" }, "→ " + t.backends.map((b) => b.url).join(", "))));
    select.append(el("option", { value: t.name }, t.name));
  }
  if (!data.tunnels.length) list.append(el("li", { class: "muted" }, "no tunnels: gotunnel start -d NAME -p PORT --inspect"));
  select.value = chosen;
  const certs = $("#certificates");
  certs.replaceChildren(...data.certificates.map((c) => el("li", {}, `${c.name}: expires ${c.not_after}`)));
  $("#trust").textContent = data.trust.stores && data.trust.stores.length
    ? "CA installed in: " + data.trust.stores.join(", ") : "CA not installed by gotunnel trust yet";
}

// ----- request list ----------------------------------------------------------------------------

function filters() {
  const params = new URLSearchParams();
  for (const key of ["tunnel", "method", "status", "path"]) {
    const value = $(`#f-${key}`).value.trim();
    if (value) params.set(key, value);
  }
  return params;
}

function matches(row) {
  const f = filters();
  if (f.get("tunnel") && row.tunnel !== f.get("tunnel")) return false;
  if (f.get("method") && row.method !== f.get("method")) return false;
  if (f.get("path") && !row.path.includes(f.get("path"))) return false;
  const status = f.get("status");
  if (status) {
    if (row.status == null) return false;
    if (/^\dxx$/i.test(status)) { if (String(row.status)[0] !== status[0]) return false; } else if (String(row.status) !== status) return false;
  }
  return true;
}

function rowFor(r) {
  const time = new Date(r.started_at * 1000).toLocaleTimeString();
  const status = r.status == null ? (r.error ? "error" : "…") : r.status;
  const cls = r.status == null ? (r.error ? "err" : "") : `s${String(r.status)[0]}`;
  return el("tr", { "data-id": r.id, "data-shown-at": state.shownAt.get(r.id) ?? "", class: state.selected === r.id ? "selected" : "", onclick: () => select(r.id) },
    el("td", {}, r.replay_of ? `${r.id} ↺${r.replay_of}` : r.id), el("td", {}, time), el("td", {}, r.method),
    el("td", { class: "path", title: r.path }, r.path), el("td", { class: cls }, status),
    el("td", {}, r.duration_ms == null ? "" : Math.round(r.duration_ms)));
}

function render() {
  const body = $("#requests tbody");
  const rows = [...state.rows.values()].filter(matches).sort((a, b) => b.id - a.id);
  body.replaceChildren(...rows.map(rowFor));
  $("#empty").hidden = rows.length > 0;
  $("#har").href = "/api/requests.har?" + filters().toString();
}

async function loadRequests() {
  const data = await api("/api/requests?" + filters().toString());
  state.rows = new Map(data.requests.map((r) => [r.id, r]));
  render();
}

function listen() {
  const source = new EventSource("/api/events");
  source.onopen = () => { $("#live").textContent = "live"; $("#live").className = "badge on"; };
  source.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "badge off"; };
  source.onmessage = (event) => {
    const row = JSON.parse(event.data);
    const known = state.rows.has(row.id);
    if (!state.shownAt.has(row.id)) state.shownAt.set(row.id, Date.now());  // when the push arrived (tests read it)
    state.rows.set(row.id, row);
    render();
    if (!known) loadTunnels().catch(() => {});
    if (row.id === state.selected && row.done) select(row.id);
  };
}

// ----- detail ----------------------------------------------------------------------------------

const MASK = "••••••";

function headerRows(target, headers) {
  target.replaceChildren(...headers.map(([name, value]) => el("tr", {}, el("td", {}, name),
    el("td", {}, value === MASK
      ? el("button", { class: "masked", type: "button", title: "click to unmask", onclick: () => reveal() }, MASK)
      : value))));
}

function hexDump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length && i < 4096; i += 16) {
    const chunk = [...bytes.slice(i, i + 16)];
    lines.push(i.toString(16).padStart(6, "0") + "  " + chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(48) +
      "  " + chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join(""));
  }
  return lines.join("\n");
}

function bodyView(target, body, headers) {
  const type = (headers.find(([k]) => k.toLowerCase() === "content-type") || [null, ""])[1].toLowerCase();
  const parts = [];
  if (!body.size) parts.push(el("span", { class: "muted" }, "(empty)"));
  else if (type.startsWith("image/") && body.encoding === "base64" && !body.truncated)
    parts.push(el("img", { src: `data:${type.split(";")[0]};base64,${body.text}`, alt: "response image" }));
  else if (body.encoding === "base64") {
    const bytes = Uint8Array.from(atob(body.text), (c) => c.charCodeAt(0));
    parts.push(el("pre", {}, hexDump(bytes)));
  } else if (type.includes("json")) {
    let text = body.text;
    try { text = JSON.stringify(JSON.parse(body.text), null, 2); } catch (e) { /* cut or invalid: as sent */ }
    parts.push(el("pre", {}, text));
  } else if (type.includes("application/x-www-form-urlencoded")) {
    const rows = [...new URLSearchParams(body.text)].map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)));
    parts.push(el("table", { class: "headers" }, el("tbody", {}, ...rows)));
  } else parts.push(el("pre", {}, body.text));
  if (body.truncated) parts.push(el("div", { class: "cut" }, `cut: ${body.kept} of ${body.size} bytes kept (inspect_body_limit)`));
  target.replaceChildren(...parts);
}

function meta(target, pairs) {
  target.replaceChildren(...pairs.filter(([, v]) => v != null && v !== "").flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function select(id, reveal = false) {
  if (state.selected !== id) {
    $("#verify-result").textContent = "";
    $("#verify-result").className = "verify-result muted";
    delete $("#verify-result").dataset.reason;
  }
  state.selected = id;
  state.revealed = reveal;
  const d = await api(`/api/requests/${id}${reveal ? "?reveal=1" : ""}`);
  state.detail = d;
  $("#detail").hidden = false;
  $("#d-title").textContent = `${d.method} ${d.path}`;
  meta($("#d-meta"), [["id", d.id], ["tunnel", d.tunnel], ["backend", d.backend], ["status", d.status],
    ["started", new Date(d.started_at * 1000).toISOString()], ["replay of", d.replay_of], ["error", d.error]]);
  const t = d.timings;
  meta($("#d-timings"), [["request sent", t.request_sent_ms != null && `${t.request_sent_ms} ms`],
    ["first byte", t.first_byte_ms != null && `${t.first_byte_ms} ms`], ["total", t.total_ms != null && `${t.total_ms} ms`]]);
  headerRows($("#request-headers tbody"), d.request.headers);
  headerRows($("#response-headers tbody"), d.response.headers);
  bodyView($("#request-body"), d.request.body, d.request.headers);
  bodyView($("#response-body"), d.response.body, d.response.headers);
  for (const tr of document.querySelectorAll("#requests tbody tr")) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
}

const reveal = () => select(state.selected, true);

async function replay() {
  const out = $("#replay-result");
  out.textContent = "replaying…";
  try {
    const result = await api(`/api/requests/${state.selected}/replay`, { method: "POST", body: "{}" });
    out.textContent = `replayed as #${result.id}: ${result.status ?? result.error}`;
    await loadRequests();
    await select(result.id);
  } catch (error) {
    out.textContent = "replay failed: " + error.message;
  }
}

// The secret goes to the loopback API for this one check; the daemon neither keeps nor logs it.
async function verifyWebhook(event) {
  event.preventDefault();
  const out = $("#verify-result");
  const secret = $("#v-secret").value;
  if (!secret) { out.textContent = "enter the webhook's signing secret"; out.className = "verify-result bad"; return; }
  out.textContent = "verifying…";
  out.className = "verify-result muted";
  delete out.dataset.reason;
  try {
    const r = await api(`/api/requests/${state.selected}/verify`, { method: "POST",
      body: JSON.stringify({ provider: $("#v-provider").value, secret }) });
    const head = r.ok ? `✓ verified (${r.provider})` : `✗ ${r.reason}${r.provider ? ` (${r.provider})` : ""}`;
    out.replaceChildren(el("span", { class: "verdict" }, head), ": " + r.detail,
      ...r.notes.map((note) => el("div", { class: "small muted" }, "note: " + note)));
    out.className = r.ok ? "verify-result ok" : "verify-result bad";
    out.dataset.reason = r.reason;
  } catch (error) {
    out.textContent = "verify failed: " + error.message;
    out.className = "verify-result bad";
  }
}

async function copyCurl() {
  const d = await api(`/api/requests/${state.selected}?reveal=1`);
  const quote = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";
  const host = (d.request.headers.find(([k]) => k.toLowerCase() === "host") || [null, "localhost"])[1];
  const skip = new Set(["host", "content-length", "connection"]);
  const parts = ["curl", "-X", d.method, quote(`https://${host}${d.path}`)];
  for (const [k, v] of d.request.headers) if (!skip.has(k.toLowerCase())) parts.push("-H", quote(`${k}: ${v}`));
  if (d.request.body.size && d.request.body.encoding === "utf-8") parts.push("--data-binary", quote(d.request.body.text));
  const text = parts.join(" ");
  try { await navigator.clipboard.writeText(text); $("#replay-result").textContent = "curl command copied"; } catch (e) {
    window.prompt("curl command", text);
  }
}

// ----- start -----------------------------------------------------------------------------------

$("#replay").addEventListener("click", replay);
$("#copy-curl").addEventListener("click", copyCurl);
$("#verify-form").addEventListener("submit", verifyWebhook);
for (const id of ["#f-tunnel", "#f-method"]) $(id).addEventListener("change", () => loadRequests());
for (const id of ["#f-status", "#f-path"]) $(id).addEventListener("input", () => render());
$("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadRequests(); });
loadTunnels().catch((e) => { $("#engine").textContent = "dashboard API unreachable: " + e.message; });
loadRequests().catch(() => {});
listen();
