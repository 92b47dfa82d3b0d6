"use strict";
// The agent desk: one websocket for events, small JSON calls for everything the agent does.
// Every piece of data is put in the page with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
let agent = null;
let current = null; // the screen pop on display
let desk = { dispositions: [], away_reasons: [], wrap_up_seconds: 0 }; // [agents] in the config
let wrapUntil = null; // when the wrap-up countdown ends (this page's clock), null: manual
let wrapTimer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) { location.href = "/agent/login"; throw new Error("signed out"); }
  const data = await resp.json();
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
  return data;
}

function showState(state, extra) {
  const reason = extra && extra.reason;
  $("state").textContent = state.replace("_", " ") + (state === "away" && reason ? ` (${reason})` : "");
  $("state").className = "state " + state;
  if (state !== "away") $("missed").hidden = true; // the explanation is for being away
  if (current && (state === "on_call" || state === "wrap_up")) markAccepted();
  showWrapUp(state === "wrap_up", extra ? extra.wrap_up_left : null);
}

// After a call: the disposition codes, and the countdown back to available ([agents] wrap_up_seconds).
function showWrapUp(on, left) {
  $("wrapup").hidden = !on;
  if (wrapTimer) clearInterval(wrapTimer);
  wrapTimer = null;
  if (!on) { wrapUntil = null; return; }
  $("wrapup-status").textContent = "";
  wrapUntil = typeof left === "number" ? Date.now() + left * 1000 : null;
  const tick = () => {
    $("wrapup-left").textContent = wrapUntil === null ? "until you press Available"
      : `available in ${Math.max(0, Math.ceil((wrapUntil - Date.now()) / 1000))} s`;
  };
  tick();
  if (wrapUntil !== null) wrapTimer = setInterval(tick, 1000);
}

function fillSelect(select, values) {
  const keep = select.querySelector("option[value='']");
  select.replaceChildren(...(keep ? [keep] : []), ...values.map((v) => { const o = el("option", v); o.value = v; return o; }));
}

async function endWrapUp() {
  const code = $("wrapup-disposition").value;
  try {
    if (code && current) {
      const body = { call_id: current.call_id, text: "", disposition: code };
      if (current.interaction_id) body.interaction_id = current.interaction_id;
      await api("POST", "/agent/api/notes", body);
    }
    const a = await api("POST", "/agent/api/state", { state: "available" });
    showState(a.state, a);
  } catch (err) {
    $("wrapup-status").textContent = "Not saved: " + err.message;
  }
}

const IDENTIFIED = {
  caller_id: "Identified by the calling number",
  account: "Identified in the IVR by account number",
  email: "Identified in the IVR by e-mail address",
};

function showMissed(ev) {
  // Why the agent is away now: their phone let a call ring out (or refused it).
  $("missed-text").textContent = ev.message || "You missed a call.";
  $("missed").hidden = false;
  if (current && current.call_id === ev.call_id) {
    $("accept").disabled = true;
    $("accept").textContent = "Missed";
  }
}

function markAccepted() {
  $("accept").disabled = true;
  $("accept").textContent = "Accepted";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function interactionItem(item) {
  const li = el("li");
  li.append(el("span", item.channel, "tag " + item.channel), " ", el("span", when(item.started_at), "muted"), " ");
  li.append(el("span", item.summary || item.subject || "(no summary)"));
  if (item.disposition) li.append(" ", el("span", item.disposition, "muted"));
  li.dataset.id = item.id;
  li.className = "interaction";
  li.addEventListener("click", () => openInteraction(item.id, li));
  return li;
}

function renderCustomer(pop) {
  const box = $("customer");
  box.replaceChildren();
  if (!pop.customer) {
    box.append(el("p", "Unknown caller", "unknown"));
    box.append(el("p", "Search for the customer on the right.", "muted"));
    $("search").value = pop.caller.number || "";
    return;
  }
  const c = pop.customer;
  box.append(el("p", c.name || "(no name)", "customer-name"));
  const dl = el("dl");
  const rows = [["Phone", c.phones.join(", ")], ["E-mail", c.emails.join(", ")], ["Account", c.accounts.join(", ")]];
  for (const [k, v] of Object.entries(c.attributes || {})) rows.push([k, typeof v === "object" ? JSON.stringify(v) : v]);
  for (const [k, v] of rows) {
    if (v === "" || v === undefined || v === null) continue;
    dl.append(el("dt", k), el("dd", v));
  }
  box.append(dl);
  const open = el("button", "Open timeline");
  open.addEventListener("click", () => openTimeline(c.id));
  box.append(open);
}

function renderPop(pop) {
  current = pop;
  $("no-call").hidden = true;
  $("call-info").hidden = false;
  $("caller-number").textContent = pop.caller.number || "withheld";
  // a callback (virtual hold): "Callback for NAME (number), waited N min"
  // a click-to-call: "Calling NAME (number)"
  const about = pop.callback || pop.outbound;
  $("caller-name").textContent = about ? about.text : (pop.caller.name || "");
  $("call-queue").textContent = pop.queue || "-";
  $("call-id").textContent = pop.call_id;
  $("accept").disabled = false;
  $("accept").textContent = "Accept";
  $("accept-status").textContent = "";
  $("note-status").textContent = "";
  renderCustomer(pop);
  renderContinues(pop);
  $("identified").textContent = pop.customer
    ? (IDENTIFIED[pop.identified_by] || (pop.identified_by ? "Identified by " + pop.identified_by : "")) : "";
  const path = $("ivr-path");
  path.replaceChildren(...(pop.ivr.path || []).map((n) => el("li", n)));
  $("ivr-inputs").replaceChildren(...(pop.ivr.inputs || []).map((i) =>
    el("li", `${i.node}: ${i.kind} ${i.value === undefined ? "" : i.value}${i.status ? " (" + i.status + ")" : ""}`)));
  $("transcript").replaceChildren(...(pop.transcript || []).map((s) => {
    const li = el("li", null, "seg-" + s.speaker);
    li.append(el("span", s.speaker, "speaker"), " ", el("span", s.text));
    return li;
  }));
  const recent = $("recent");
  recent.replaceChildren();
  const byChannel = pop.last_by_channel || {};
  const channels = Object.keys(byChannel);
  if (!channels.length) recent.append(el("li", "No earlier interactions.", "muted"));
  for (const ch of channels) recent.append(interactionItem(byChannel[ch]));
  document.title = about ? about.text : `Call from ${pop.caller.number || "withheld"}`;
}

function renderContinues(pop) {
  // The caller chose to continue an earlier conversation: say which, and open it on a click.
  const box = $("continues");
  box.replaceChildren();
  box.hidden = !pop.continues;
  if (!pop.continues) return;
  const c = pop.continued || {};
  const about = c.summary || c.subject || "(no summary)";
  const line = el("p", null, "continues-line");
  line.append(el("strong", `Continues ${c.channel || "an"} interaction ${pop.continues}`), ": ", el("span", about));
  if (c.agent) line.append(" ", el("span", `(with ${c.agent})`, "muted"));
  box.append(line);
  box.dataset.id = pop.continues;
  box.title = "Show the conversation";
  box.onclick = (event) => {
    if (event.target.closest(".detail")) return;
    openInteraction(pop.continues, box);
  };
}

// Click-to-call: your phone rings first, then the customer's; the steps come as "outbound" events.
async function placeCall(customerId, number, button) {
  button.disabled = true;
  showOutbound({ message: `Calling ${number}…` });
  try {
    await api("POST", "/agent/api/calls", { customer_id: customerId, number });
  } catch (err) {
    showOutbound({ message: "Not called: " + err.message });
  } finally {
    button.disabled = false;
  }
}

function showOutbound(ev) {
  $("outbound-text").textContent = ev.message || "";
  $("outbound").hidden = !ev.message;
  // the customer answered: notes and the disposition go to the call's record
  if (ev.interaction_id && current && current.call_id === ev.call_id) current.interaction_id = ev.interaction_id;
}

function phoneLine(customer) {
  const p = el("p", null, "phones");
  for (const number of customer.phones || []) {
    const call = el("button", "Call", "call-button");
    call.type = "button";
    call.title = `Call ${number}: your phone rings first`;
    call.addEventListener("click", () => placeCall(customer.id, number, call));
    p.append(el("span", number), " ", call, " ");
  }
  return p;
}

async function openTimeline(customerId) {
  const data = await api("GET", `/agent/api/customers/${encodeURIComponent(customerId)}`);
  const box = $("timeline");
  box.replaceChildren(el("h3", `Timeline: ${data.customer.name || data.customer.id}`));
  if ((data.customer.phones || []).length) box.append(phoneLine(data.customer));
  const ul = el("ul");
  if (!data.interactions.length) ul.append(el("li", "Nothing yet.", "muted"));
  for (const item of data.interactions) ul.append(interactionItem(item));
  box.append(ul);
}

async function openInteraction(id, li) {
  if (li.querySelector(".detail")) { li.querySelector(".detail").remove(); return; }
  const data = await api("GET", `/agent/api/interactions/${encodeURIComponent(id)}`);
  const d = el("div", null, "detail");
  if (data.content) d.append(el("p", data.content));
  for (const s of data.transcript || []) d.append(el("p", `${s.speaker}: ${s.text}`, "muted"));
  for (const n of data.notes || []) d.append(el("p", `Note (${n.agent_id}): ${n.text}${n.disposition ? " [" + n.disposition + "]" : ""}`));
  li.append(d);
}

async function search(event) {
  event.preventDefault();
  const q = $("search").value.trim();
  if (!q) return;
  const data = await api("GET", `/agent/api/customers?q=${encodeURIComponent(q)}`);
  const ul = $("results");
  ul.replaceChildren();
  if (!data.customers.length) ul.append(el("li", "No customer found.", "muted"));
  for (const c of data.customers) {
    const li = el("li", `${c.name || "(no name)"} ${c.phones.concat(c.emails).join(", ")}`, "result");
    li.addEventListener("click", () => openTimeline(c.id));
    ul.append(li);
  }
}

async function saveNote(event) {
  event.preventDefault();
  if (!current) return;
  const body = { call_id: current.call_id, text: $("note").value, disposition: $("disposition").value || null };
  if (current.interaction_id) body.interaction_id = current.interaction_id;
  $("note-status").textContent = "saving…";
  try {
    await api("POST", "/agent/api/notes", body);
    $("note-status").textContent = "Saved";
  } catch (err) {
    $("note-status").textContent = "Not saved: " + err.message;
  }
}

function connect(delay) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/v1/agents/${encodeURIComponent(agent.id)}/events`);
  ws.onopen = () => { $("link").textContent = "connected"; $("link").className = "link up"; delay = 500; };
  ws.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    if (ev.type === "screen_pop") renderPop(ev);
    else if (ev.type === "state") showState(ev.state, ev);
    else if (ev.type === "hello") {
      // A reload or a new tab: the call on screen comes back with the state.
      if (ev.call && (!current || current.call_id !== ev.call.call_id)) renderPop(ev.call);
      showState(ev.agent.state, { reason: ev.agent.reason, wrap_up_left: ev.wrap_up_left });
      if (ev.missed) showMissed(ev.missed);
    } else if (ev.type === "missed") showMissed(ev);
    else if (ev.type === "outbound") showOutbound(ev);
  };
  ws.onclose = () => {
    $("link").textContent = "reconnecting…";
    $("link").className = "link down";
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

async function main() {
  const me = await api("GET", "/agent/api/me");
  agent = me.agent;
  desk = me.desk || desk;
  fillSelect($("disposition"), desk.dispositions);
  fillSelect($("wrapup-disposition"), desk.dispositions);
  fillSelect($("away-reason"), desk.away_reasons);
  $("away-reason").hidden = !desk.away_reasons.length;
  $("agent-name").textContent = agent.name;
  showState(agent.state, { reason: agent.reason, wrap_up_left: me.wrap_up_left });
  for (const b of document.querySelectorAll("button[data-state]")) {
    b.addEventListener("click", async () => {
      const a = await api("POST", "/agent/api/state", { state: b.dataset.state });
      showState(a.state, a);
    });
  }
  $("away").addEventListener("click", async () => {
    const body = { state: "away" };
    if ($("away-reason").value) body.reason = $("away-reason").value;
    const a = await api("POST", "/agent/api/state", body);
    showState(a.state, a);
  });
  $("wrapup-done").addEventListener("click", endWrapUp);
  $("accept").addEventListener("click", async () => {
    if (!current) return;
    try {
      const a = await api("POST", "/agent/api/accept", { call_id: current.call_id });
      markAccepted();
      showState(a.state);
    } catch (err) {
      $("accept").disabled = true;
      $("accept-status").textContent = "Not accepted: " + err.message;
    }
  });
  $("missed-available").addEventListener("click", async () =>
    showState((await api("POST", "/agent/api/state", { state: "available" })).state));

  $("search-form").addEventListener("submit", search);
  $("note-form").addEventListener("submit", saveNote);
  connect(500);
}

main();
