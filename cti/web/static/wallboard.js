"use strict";
// The wallboard (/wallboard) and the reports page (/admin/reports). Data goes in with textContent;
// charts and flow diagrams are SVG the server drew.
const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);
const secs = (x) => (x === null || x === undefined ? "–" : `${Math.round(x)} s`);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(...cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(el("td", c));
  return tr;
}

function svg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  return document.importNode(doc.documentElement, true);
}

async function get(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (resp.status === 401) { location.href = "/admin/login"; throw new Error("signed out"); }
  if (!resp.ok) throw new Error(`${url}: ${resp.status}`);
  return resp.json();
}

async function wallboard() {
  const d = await get("/admin/api/wallboard");
  $("in-ivr").textContent = d.calls_in_ivr;
  $("live").textContent = d.calls_live;
  $("sl").textContent = pct(d.today.service_level);
  $("sl-target").textContent = d.service_level_seconds;
  $("abandoned").textContent = d.today.abandoned;
  $("abandon-rate").textContent = pct(d.today.abandonment_rate);
  $("calls-today").textContent = d.today.calls;
  $("containment").textContent = pct(d.today.containment_rate);
  $("asa").textContent = secs(d.today.asa_seconds);
  $("aht").textContent = secs(d.today.aht_seconds);
  $("queues").replaceChildren(...d.queues.map((q) => row(q.queue, q.waiting, secs(q.longest_wait))));
  if (!d.queues.length) $("queues").append(row("no queues", "", ""));
  const reasons = Object.entries(d.away_reasons || {}).filter(([r]) => r).map(([r, n]) => `${r} ${n}`).join(", ");
  $("agents").replaceChildren(...Object.entries(d.agents).map(([s, n]) =>
    el("span", `${s.replace("_", " ")}: ${n}${s === "away" && reasons ? " (" + reasons + ")" : ""}`, "state " + s)));
  if (!Object.keys(d.agents).length) $("agents").append(el("span", "no agents", "muted"));
}

function totalsRow(name, t) {
  return row(name, t.calls, pct(t.containment_rate), pct(t.abandonment_rate), pct(t.service_level),
    secs(t.asa_seconds), secs(t.aht_seconds));
}

async function reports() {
  const d = await get(`/admin/api/reports?days=${$("days").value}`);
  $("chart").replaceChildren(svg(d.chart));
  $("per-day").replaceChildren(...d.days.map((x) => totalsRow(x.day, x)));
  if (!d.days.length) $("per-day").append(row("no calls in this range", "", "", "", "", "", ""));
  $("per-flow").replaceChildren(...d.flows.map((x) => totalsRow(x.flow, x)));
  const box = $("flows");
  box.replaceChildren();
  for (const f of d.flows) {
    if (!f.svg) continue;
    const div = el("div", null, "flow");
    div.dataset.flow = f.flow;
    div.append(el("h3", `${f.flow}: calls reaching each node, and ending there`), svg(f.svg));
    box.append(div);
  }
}

async function loop(fn, every) {
  try {
    await fn();
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) { $("updated").textContent = "update failed: " + err.message; }
  if (every) setTimeout(() => loop(fn, every), every);
}

if ($("in-ivr")) loop(wallboard, 2000);
if ($("per-day")) { $("days").addEventListener("change", () => loop(reports, 0)); loop(reports, 60000); }
