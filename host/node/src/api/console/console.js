// The wasmpay operator console: reads the node's API with the admin token and draws it.
// Everything shown is set with textContent: no text from the node becomes markup.
"use strict";

const POLL_MS = 2000;
const HISTORY = 150; // samples kept: 5 minutes at one every 2 s
const REQUEST_TIMEOUT_MS = 10000;
const $ = (selector) => document.querySelector(selector);
const state = { token: sessionStorage.getItem("wasmpay-token"), exponents: {}, last: null, rate: [], p50: [], p99: [], timer: null };

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = document.createElement("td");
      td.append(cell);
      tr.append(td);
    } else {
      const [text, className] = Array.isArray(cell) ? cell : [cell, ""];
      tr.append(element("td", text, className));
    }
  }
  return tr;
}

function say(text, bad) {
  const status = $("#status");
  status.textContent = text;
  status.className = bad ? "error" : "";
}

// One call of the API, bounded in time; the JSON answer, or an Error with the node's message.
async function api(method, path, body, idempotent) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotent) headers["Idempotency-Key"] = `console-${crypto.randomUUID()}`;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await response.text();
  let answer = null;
  try { answer = text ? JSON.parse(text) : null; } catch { answer = { detail: text }; }
  if (response.status === 401) { signOut("the token was refused"); throw new Error("unauthorized"); }
  if (!response.ok) {
    const error = new Error((answer && (answer.detail || answer.message || answer.title)) || `${response.status}`);
    error.status = response.status;
    throw error;
  }
  return answer;
}

// Minor units as major units of `currency`, exactly (no floating point).
function money(minor, currency) {
  if (minor === undefined || minor === null) return "";
  let exponent = state.exponents[currency];
  if (exponent === undefined) {
    try { exponent = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits; }
    catch { exponent = 0; }
  }
  const negative = String(minor).startsWith("-");
  const digits = String(minor).replace("-", "").padStart(exponent + 1, "0");
  const major = exponent ? `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}` : digits;
  return `${negative ? "-" : ""}${major} ${currency || ""}`.trim();
}

function confirmed(text) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

// --- charts, from the node's own /metrics ---------------------------------------------------

function parseMetrics(text) {
  const answers = { total: 0, buckets: new Map() };
  for (const line of text.split("\n")) {
    if (line.startsWith("wasmpay_payments_total{")) {
      answers.total += Number(line.slice(line.lastIndexOf(" ") + 1));
    } else if (line.startsWith("wasmpay_payment_seconds_bucket{") && line.includes('operation="pay"')) {
      const le = line.match(/le="([^"]+)"/)[1];
      const bound = le === "+Inf" ? Infinity : Number(le);
      answers.buckets.set(bound, (answers.buckets.get(bound) || 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
    }
  }
  return answers;
}

// The q-quantile of the observations between two samples of a cumulative histogram,
// interpolated in its bucket as Prometheus's histogram_quantile does; null without any.
function quantile(q, before, after) {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((bound) => (after.get(bound) || 0) - ((before && before.get(bound)) || 0));
  const total = counts[counts.length - 1];
  if (!total) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) {
      if (bounds[i] === Infinity) return bounds[i - 1] || 0;
      const lower = i ? bounds[i - 1] : 0, below = i ? counts[i - 1] : 0;
      const inBucket = counts[i] - below;
      return lower + (bounds[i] - lower) * (inBucket ? (rank - below) / inBucket : 1);
    }
  }
  return null;
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

function draw(svg, lines) {
  svg.replaceChildren();
  const values = lines.flatMap(([series]) => series.filter((value) => value !== null));
  const top = Math.max(1e-9, ...values) * 1.1;
  for (const [series, className] of lines) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    // Newest at the right edge; the first minute stretches over the width until it fills.
    const step = 300 / (Math.max(series.length, 30) - 1);
    const points = series.map((value, i) => value === null ? null : `${300 - (series.length - 1 - i) * step},${100 - (value / top) * 100}`);
    line.setAttribute("points", points.filter(Boolean).join(" "));
    if (className) line.setAttribute("class", className);
    svg.append(line);
  }
}

async function refreshCharts() {
  const response = await fetch("/metrics", { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const sample = { at: performance.now(), ...parseMetrics(await response.text()) };
  if (state.last) {
    const seconds = (sample.at - state.last.at) / 1000;
    const rate = Math.max(0, sample.total - state.last.total) / seconds;
    const p50 = quantile(0.5, state.last.buckets, sample.buckets);
    const p99 = quantile(0.99, state.last.buckets, sample.buckets);
    push(state.rate, rate);
    push(state.p50, p50 === null ? null : p50 * 1000);
    push(state.p99, p99 === null ? null : p99 * 1000);
    $("#rate-now").textContent = `${rate.toFixed(1)}/s`;
    $("#latency-now").textContent = p99 === null ? "" : `${(p50 * 1000).toFixed(1)} / ${(p99 * 1000).toFixed(1)} ms`;
    draw($("#chart-rate"), [[state.rate, ""]]);
    draw($("#chart-latency"), [[state.p50, ""], [state.p99, "p99"]]);
  }
  state.last = sample;
}

// --- cluster ---------------------------------------------------------------------------------

const PALETTE = ["#2457c5", "#137333", "#b06000", "#8430ce", "#0b7285", "#c2255c", "#5c940d", "#495057"];

function renderCluster(view) {
  $("#node").textContent = `node ${view.node} · ledger ${view.ledger}`;
  const owners = new Map();
  for (const lease of view.leases) if (lease.owner) owners.set(lease.owner, (owners.get(lease.owner) || 0) + 1);
  const colour = new Map(view.members.map((member, i) => [member.node, PALETTE[i % PALETTE.length]]));
  const members = $("#members tbody");
  members.replaceChildren(...view.members.map((member) => {
    const swatch = element("span", "■ ");
    swatch.style.color = colour.get(member.node);
    const name = element("span");
    name.append(swatch, member.node);
    const tr = row([name, member.http, member.ledger, [owners.get(member.node) || 0, "n"]]);
    tr.dataset.node = member.node;
    return tr;
  }));
  const moving = view.leases.filter((lease) => lease.owner !== lease.assigned);
  const lagging = view.leases.filter((lease) => lease.lag);
  $("#cluster-summary").textContent = `${view.members.length} members, ${view.partitions} partitions, lease TTL ${view.lease_ttl_ms} ms`;
  const map = $("#partition-map");
  map.replaceChildren(...view.leases.map((lease) => {
    const cell = element("span");
    cell.style.background = lease.owner ? colour.get(lease.owner) || "#999" : "#fff";
    cell.title = `partition ${lease.partition}: ${lease.owner || "unowned"}, token ${lease.token ?? "-"}` +
      (lease.assigned !== lease.owner ? `, moving to ${lease.assigned}` : "") + (lease.lag ? `, lag ${lease.lag}` : "");
    if (lease.owner !== lease.assigned) cell.className = "moving";
    return cell;
  }));
  const notes = [];
  if (moving.length) notes.push(`${moving.length} moving or unowned`);
  if (lagging.length) notes.push(`${lagging.reduce((sum, lease) => sum + lease.lag, 0)} durable payments waiting`);
  if (view.refused) notes.push(`this node serves nothing: ${view.refused}`);
  $("#partition-notes").textContent = notes.join(" · ") || "every partition has its owner";
  const health = $("#health");
  health.textContent = view.refused ? "refused" : moving.length ? "rebalancing" : "serving";
  health.className = `pill ${view.refused ? "bad" : "ok"}`;
}

// --- plugins ---------------------------------------------------------------------------------

function actionButton(text, className, action) {
  const button = element("button", text, className);
  button.type = "button";
  button.addEventListener("click", action);
  return button;
}

async function change(what, path, body) {
  if (!(await confirmed(what))) return say("cancelled");
  say(`${what}…`);
  try {
    await api("POST", path, body, true);
    say(`${what}: done on every node`);
  } catch (error) {
    say(`${what}: ${error.message}`, true);
  }
  refresh();
}

function renderPlugins(listing) {
  const tbody = $("#plugins tbody");
  const rows = [];
  for (const plugin of listing.plugins) {
    for (const version of plugin.versions) {
      const actions = element("span");
      if (version.version !== plugin.active) {
        actions.append(actionButton("Activate", "secondary activate", () =>
          change(`Activate ${plugin.name} ${version.version} on every node`, `/v1/plugins/${plugin.name}/activate`, { version: version.version })));
      } else if (plugin.versions.length > 1) {
        actions.append(actionButton("Roll back", "danger rollback", () =>
          change(`Roll ${plugin.name} back from ${version.version} to the version before, on every node`, `/v1/plugins/${plugin.name}/rollback`)));
      }
      const state = version.state + (version.quarantined ? ` (${version.quarantined})` : "");
      const tr = row([plugin.name, version.version, [state, `state-${version.state}`], [version.calls, "n"], [version.failures, "n"],
        [version.p50_us ?? "", "n"], [version.p99_us ?? "", "n"], (plugin.methods || []).join(", "), actions]);
      tr.dataset.plugin = plugin.name;
      tr.dataset.version = version.version;
      tr.dataset.state = version.state;
      rows.push(tr);
    }
    if (plugin.refused) {
      rows.push(row(["", "", [`refused: ${plugin.refused.code}`, "error"], "", "", "", "", plugin.refused.message || "", ""]));
    }
  }
  tbody.replaceChildren(...rows);
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function pushPlugin(event) {
  event.preventDefault();
  const [wasm, manifestFile] = [$("#push-wasm").files[0], $("#push-manifest").files[0]];
  const manifest = await manifestFile.text();
  const name = (manifest.match(/^\s*name\s*=\s*"([a-z0-9-]{1,32})"/m) || [])[1];
  const version = (manifest.match(/^\s*version\s*=\s*"([^"]+)"/m) || [])[1];
  if (!name) return say("the manifest names no plugin (name = \"…\")", true);
  if (!(await confirmed(`Push ${name} ${version || ""} and activate it on every node`))) return say("cancelled");
  say(`pushing ${name}…`);
  try {
    await api("PUT", `/v1/plugins/${name}`, { manifest, component: base64(await wasm.arrayBuffer()), activate: true }, true);
    say(`${name} ${version || ""} active on every node`);
  } catch (error) {
    say(`push refused: ${error.message}`, true);
  }
  refresh();
}

// --- payments and accounts -------------------------------------------------------------------

function renderRecent(recent) {
  $("#recent tbody").replaceChildren(...recent.payments.map((reply) => {
    const tr = row([reply.id ?? "", [reply.status, `status-${reply.status}`], reply.code, [money(reply.amount, reply.currency), "n"],
      [money(reply.fee, reply.currency), "n"], (reply.plugins || []).join(", "), reply.message]);
    tr.dataset.payment = reply.id ?? "";
    return tr;
  }));
}

async function lookUp(event) {
  event.preventDefault();
  const id = $("#account").value.trim();
  const view = $("#account-view");
  try {
    const account = await api("GET", `/v1/accounts/${encodeURIComponent(id)}`);
    if (account.exponent !== null && account.exponent !== undefined) state.exponents[account.currency] = account.exponent;
    const statement = await api("GET", `/v1/accounts/${encodeURIComponent(id)}/payments?limit=20`);
    const summary = element("p");
    summary.id = "account-balance";
    summary.textContent = `${account.id}: balance ${money(account.balance, account.currency)}, available ${money(account.available, account.currency)}, floor ${money(account.floor, account.currency)}`;
    const table = element("table");
    table.append(row(["id", "kind", "status", "payer", "payee", "amount", "fee"].map((name) => element("b", name))));
    for (const line of statement.payments) {
      table.append(row([line.id, line.kind, [line.status, `status-${line.status}`], line.payer, line.payee,
        [money(line.amount, line.currency), "n"], [money(line.fee, line.currency), "n"]]));
    }
    view.replaceChildren(summary, element("h3", "Statement, oldest first (20)"), table);
  } catch (error) {
    view.replaceChildren(element("p", `${id}: ${error.status === 404 ? "no such account" : error.message}`, "error"));
  }
}

// --- the loop --------------------------------------------------------------------------------

async function refresh() {
  const parts = [
    api("GET", "/v1/cluster").then(renderCluster),
    api("GET", "/v1/plugins").then(renderPlugins),
    api("GET", "/v1/payments").then(renderRecent),
    refreshCharts(),
  ];
  const failed = (await Promise.allSettled(parts)).filter((part) => part.status === "rejected");
  if (failed.length) say(`the node did not answer everything: ${failed[0].reason.message}`, true);
}

async function signIn(token) {
  state.token = token;
  try {
    const assets = await api("GET", "/v1/assets");
    for (const asset of assets.assets || []) state.exponents[asset.code] = asset.exponent;
  } catch (error) {
    $("#login-error").textContent = error.message === "unauthorized" ? "the token was refused" : error.message;
    return;
  }
  sessionStorage.setItem("wasmpay-token", token);
  $("#login-panel").hidden = true;
  $("#console").hidden = false;
  $("#logout").hidden = false;
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, POLL_MS);
}

function signOut(why) {
  clearInterval(state.timer);
  sessionStorage.removeItem("wasmpay-token");
  state.token = null;
  $("#console").hidden = true;
  $("#logout").hidden = true;
  $("#login-panel").hidden = false;
  $("#login-error").textContent = why || "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (event) => { event.preventDefault(); signIn($("#token").value); });
  $("#logout").addEventListener("click", () => signOut());
  $("#push").addEventListener("submit", pushPlugin);
  $("#lookup").addEventListener("submit", lookUp);
  if (state.token) signIn(state.token);
});
