"use strict";
// Polls /admin/api/overview. Data goes in with textContent; flow diagrams are SVG the server drew.
const $ = (id) => document.getElementById(id);
let flowsShown = "";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(...cells) {
  const tr = el("tr");
  for (const c of cells) tr.append(c instanceof Node ? (() => { const td = el("td"); td.append(c); return td; })() : el("td", c));
  return tr;
}

function ago(epoch) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - epoch));
  return s < 120 ? `${s}s` : `${Math.round(s / 60)}m`;
}

function renderFlows(flows) {
  // redrawn when a flow changes or live calls move to other nodes (highlighted in the diagram)
  const key = JSON.stringify(flows.map((f) => [f.name, f.valid, f.errors, f.nodes, f.live, f.svg && f.svg.length]));
  if (key === flowsShown) return;
  flowsShown = key;
  const box = $("flows");
  box.replaceChildren();
  for (const f of flows) {
    const div = el("div", null, "flow");
    div.dataset.flow = f.name;
    const h = el("h3", `${f.name} `);
    h.append(el("span", f.valid ? "valid" : (f.loaded ? "invalid (last good version running)" : "invalid, not loaded"),
      f.valid ? "good" : "bad"));
    div.append(h);
    if (f.errors.length) {
      const ul = el("ul", null, "bad");
      for (const e of f.errors) ul.append(el("li", e));
      div.append(ul);
    }
    if (f.svg) {
      const doc = new DOMParser().parseFromString(f.svg, "image/svg+xml");
      div.append(document.importNode(doc.documentElement, true));
    }
    box.append(div);
  }
}

async function refresh() {
  const resp = await fetch("/admin/api/overview", { credentials: "same-origin" });
  if (resp.status === 401) { location.href = "/admin/login"; return; }
  const d = await resp.json();
  $("calls").replaceChildren(...d.calls.map((c) => row(`${c.caller}${c.caller_name ? " (" + c.caller_name + ")" : ""}`,
    c.flow || "", c.node || "", c.queue || "", c.agent_id || "", ago(c.started))));
  if (!d.calls.length) $("calls").append(row("no calls", "", "", "", "", ""));
  $("queues").replaceChildren(...Object.entries(d.queues).map(([q, n]) => row(q, n)));
  if (!Object.keys(d.queues).length) $("queues").append(row("no callers waiting", ""));
  $("agents").replaceChildren(...d.agents.map((a) => {
    const state = el("span", a.state.replace("_", " "), "state " + a.state);
    return row(`${a.name} (${a.id})`, state, a.skills.join(", "), a.connected);
  }));
  renderFlows(d.flows);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function loop() {
  try { await refresh(); } catch (err) { $("updated").textContent = "update failed: " + err.message; }
  setTimeout(loop, 2000);
}
loop();
