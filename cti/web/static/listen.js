"use strict";
// Supervisor listen-in on the admin page: pick a live call with an agent (browser or desk phone) and hear
// both sides (silent monitor: nobody on the call hears you). One offer, one answer over HTTP
// (POST /admin/api/listen); nothing here writes HTML from data.

(() => {
  const state = { pc: null, id: null };
  window.listenIn = state; // for the page's tests and for debugging in the console

  function el(tag, text, cls, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  const box = el("aside", null, "listen-in", { id: "listen-in" });
  const pick = el("select", null, null, { id: "listen-call", "aria-label": "Call to listen to" });
  const go = el("button", "Listen", null, { id: "listen-start", type: "button" });
  const stop = el("button", "Stop", null, { id: "listen-stop", type: "button", disabled: "" });
  const status = el("span", "", "muted", { id: "listen-status" });
  const audio = el("audio", null, null, { id: "listen-audio", autoplay: "" });
  box.append(el("strong", "Listen in"), pick, go, stop, status, audio);
  document.body.append(box);

  async function refresh() {
    try {
      const resp = await fetch("/admin/api/overview", { credentials: "same-origin" });
      if (!resp.ok) return;
      const calls = (await resp.json()).calls.filter((c) => c.agent_id);
      const chosen = pick.value;
      pick.replaceChildren(...calls.map((c) => {
        const id = c.key || c.call_id;
        const o = el("option", `${c.caller} → ${c.agent_id}`, null, { value: id });
        if (id === chosen) o.selected = true;
        return o;
      }));
      if (!calls.length) pick.append(el("option", "no calls with an agent", null, { value: "" }));
    } catch (err) { /* the next refresh tries again */ }
  }

  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
      setTimeout(resolve, ms);
    });
  }

  function end(text) {
    if (state.pc) state.pc.close();
    state.pc = null;
    audio.srcObject = null;
    go.disabled = false;
    stop.disabled = true;
    status.textContent = text;
  }

  go.addEventListener("click", async () => {
    const callId = pick.value;
    if (!callId || state.pc) return;
    go.disabled = true;
    status.textContent = "connecting…";
    const pc = state.pc = new RTCPeerConnection();
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (e) => { audio.srcObject = new MediaStream([e.track]); audio.play().catch(() => {}); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") status.textContent = "listening";
      else if (pc.connectionState === "failed" || pc.connectionState === "closed") end("ended");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 1500);
    const resp = await fetch("/admin/api/listen", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ call_id: callId, sdp: pc.localDescription.sdp }),
    });
    const data = await resp.json();
    if (!resp.ok) { end((data.error && data.error.message) || "cannot listen to this call"); return; }
    state.id = data.listen;
    stop.disabled = false;
    await pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
  });

  stop.addEventListener("click", async () => {
    if (state.id) await fetch(`/admin/api/listen/${encodeURIComponent(state.id)}`, { method: "DELETE", credentials: "same-origin" });
    state.id = null;
    end("stopped");
  });

  refresh();
  setInterval(refresh, 3000);
})();
