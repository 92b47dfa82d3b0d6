"use strict";
// The softphone beside the screen pop: agents whose phone is "browser:<agent id>" take calls here.
// Its own connection to the agent's events websocket (the session cookie signs it in) carries the
// WebRTC signalling: the service offers (rtc_offer), this page answers (rtc_answer) once the agent
// clicks Answer; then rtc_hangup / rtc_hold / rtc_dtmf / rtc_reject, and rtc_end from the service.
// Mute stays in the page (the microphone track is disabled). Nothing here writes HTML from data.

(() => {
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];
  const sp = {
    ws: null, pc: null, offer: null, leg: null, stream: null, state: "idle",
    muted: false, held: false, started: null, timer: null, ring: null, audio: null, ctx: null,
  };
  window.softphone = sp; // for the page's own tests and for debugging in the console

  function el(tag, text, cls, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function build() {
    const box = el("aside", null, "softphone idle", { id: "softphone", "aria-live": "polite" });
    const head = el("div", null, "sp-head");
    head.append(el("strong", "Phone"), el("span", "offline", "sp-status", { id: "sp-status" }),
      el("span", "", "sp-timer", { id: "sp-timer" }));
    const who = el("p", "", "sp-caller", { id: "sp-caller" });
    const ringing = el("div", null, "sp-row sp-ringing");
    ringing.append(el("button", "Answer", "sp-answer", { id: "sp-answer", type: "button" }),
      el("button", "Reject", "sp-reject", { id: "sp-reject", type: "button" }));
    const talking = el("div", null, "sp-row sp-talking");
    talking.append(el("button", "Mute", "sp-mute", { id: "sp-mute", type: "button" }),
      el("button", "Hold", "sp-hold", { id: "sp-hold", type: "button" }),
      el("button", "Keypad", "sp-keys", { id: "sp-keys", type: "button" }),
      el("button", "Hang up", "sp-hangup", { id: "sp-hangup", type: "button" }));
    const xfer = el("form", null, "sp-xfer", { id: "sp-xfer-form" });
    xfer.append(el("input", null, "sp-xfer-target", { id: "sp-xfer-target", placeholder: "queue:NAME, number or sip:…",
      autocomplete: "off", "aria-label": "Transfer to" }),
    el("button", "Transfer", "sp-xfer-go", { id: "sp-transfer", type: "submit" }));
    const pad = el("div", null, "sp-pad", { id: "sp-pad", hidden: "" });
    for (const k of KEYS) pad.append(el("button", k, "sp-key", { type: "button", "data-key": k }));
    const sent = el("p", "", "sp-sent muted", { id: "sp-sent" });
    const captions = el("ul", null, "sp-captions", { id: "sp-captions", "aria-label": "Live captions" });
    sp.audio = el("audio", null, null, { id: "sp-audio", autoplay: "" });
    box.append(head, who, ringing, talking, xfer, pad, sent, captions, sp.audio);
    document.body.append(box);
    box.querySelector("#sp-answer").addEventListener("click", answer);
    box.querySelector("#sp-reject").addEventListener("click", reject);
    box.querySelector("#sp-hangup").addEventListener("click", hangup);
    box.querySelector("#sp-mute").addEventListener("click", toggleMute);
    box.querySelector("#sp-hold").addEventListener("click", toggleHold);
    box.querySelector("#sp-keys").addEventListener("click", () => { pad.hidden = !pad.hidden; });
    xfer.addEventListener("submit", (e) => {
      e.preventDefault();
      const target = $sp("sp-xfer-target").value.trim();
      if (target && sp.leg && (sp.state === "connected" || sp.state === "held")) {
        send({ type: "rtc_transfer", leg: sp.leg, target });
      }
    });
    pad.addEventListener("click", (e) => {
      const key = e.target && e.target.dataset ? e.target.dataset.key : null;
      if (key && sp.leg && sp.state === "connected") {
        send({ type: "rtc_dtmf", leg: sp.leg, digits: key });
        $sp("sp-sent").textContent += key;
      }
    });
    // Browsers start audio only after a gesture on the page: the first click unlocks the ringer.
    document.addEventListener("click", () => { if (sp.ctx && sp.ctx.state === "suspended") sp.ctx.resume(); });
  }

  const $sp = (id) => document.getElementById(id);

  function show(state, status) {
    sp.state = state;
    $sp("softphone").className = `softphone ${state}`;
    $sp("sp-status").textContent = status || state;
  }

  function send(message) {
    if (sp.ws && sp.ws.readyState === WebSocket.OPEN) sp.ws.send(JSON.stringify(message));
  }

  // ---- ringing: a two-tone ring (WebAudio) while the panel flashes ------------------------------
  function startRing() {
    stopRing();
    try {
      sp.ctx = sp.ctx || new AudioContext();
      if (sp.ctx.state === "suspended") sp.ctx.resume();
    } catch (err) { return; }
    const burst = () => {
      const ctx = sp.ctx;
      const gain = ctx.createGain();
      gain.gain.value = 0.0001;
      gain.connect(ctx.destination);
      for (const hz of [440, 480]) {
        const osc = ctx.createOscillator();
        osc.frequency.value = hz;
        osc.connect(gain);
        osc.start();
        osc.stop(ctx.currentTime + 2);
      }
      gain.gain.exponentialRampToValueAtTime(0.15, ctx.currentTime + 0.05);
      gain.gain.setValueAtTime(0.15, ctx.currentTime + 1.9);
      gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 2);
    };
    burst();
    sp.ring = setInterval(burst, 6000);
  }

  function stopRing() {
    if (sp.ring) clearInterval(sp.ring);
    sp.ring = null;
  }

  // ---- the call ---------------------------------------------------------------------------------
  function offered(msg) {
    if (sp.leg && sp.state !== "idle" && sp.state !== "ended") {
      send({ type: "rtc_reject", leg: msg.leg }); // one call at a time
      return;
    }
    sp.offer = msg;
    sp.leg = msg.leg;
    sp.muted = sp.held = false;
    $sp("sp-caller").textContent = msg.caller_name ? `${msg.caller} (${msg.caller_name})` : (msg.caller || "unknown caller");
    $sp("sp-sent").textContent = "";
    $sp("sp-captions").replaceChildren();
    $sp("sp-timer").textContent = "";
    $sp("sp-answer").disabled = false;
    // a call the service places (click-to-call, a callback): answer, then the customer is dialled
    show("ringing", msg.outbound ? "answer to place the call" : "incoming call");
    startRing();
  }

  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ms); // host candidates come at once; do not wait long for the rest
    });
  }

  async function answer() {
    if (!sp.offer || sp.state !== "ringing") return;
    stopRing();
    $sp("sp-answer").disabled = true;
    show("answering", "connecting…");
    const offer = sp.offer;
    try {
      sp.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      const pc = sp.pc = new RTCPeerConnection({ iceServers: offer.ice_servers || [] });
      pc.ontrack = (e) => {
        sp.audio.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
        sp.audio.play().catch(() => {});
      };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "failed") show("ended", "call failed (no media path)");
      };
      await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
      for (const track of sp.stream.getAudioTracks()) pc.addTrack(track, sp.stream);
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc, 1500);
      send({ type: "rtc_answer", leg: offer.leg, sdp: pc.localDescription.sdp });
    } catch (err) {
      show("ended", `cannot answer: ${err.message || err}`);
      send({ type: "rtc_reject", leg: offer.leg });
      release();
    }
  }

  function reject() {
    if (!sp.leg) return;
    stopRing();
    send({ type: "rtc_reject", leg: sp.leg });
    show("ended", "rejected");
  }

  function hangup() {
    if (!sp.leg) return;
    send({ type: "rtc_hangup", leg: sp.leg });
    ended("you hung up");
  }

  function toggleMute() {
    if (!sp.stream) return;
    sp.muted = !sp.muted;
    for (const t of sp.stream.getAudioTracks()) t.enabled = !sp.muted;
    $sp("sp-mute").textContent = sp.muted ? "Unmute" : "Mute";
    $sp("sp-mute").classList.toggle("on", sp.muted);
  }

  function toggleHold() {
    if (!sp.leg || (sp.state !== "connected" && sp.state !== "held")) return;
    send({ type: "rtc_hold", leg: sp.leg, on: sp.state !== "held" });
  }

  function tick() {
    if (!sp.started) return;
    const s = Math.floor((Date.now() - sp.started) / 1000);
    $sp("sp-timer").textContent = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  function release() {
    stopRing();
    if (sp.timer) clearInterval(sp.timer);
    sp.timer = null;
    if (sp.pc) sp.pc.close();
    if (sp.stream) for (const t of sp.stream.getTracks()) t.stop();
    sp.pc = sp.stream = null;
    sp.audio.srcObject = null;
  }

  function ended(why) {
    release();
    show("ended", why);
    sp.started = null;
  }

  function onState(msg) {
    if (msg.leg !== sp.leg) return;
    if (msg.state === "connected") {
      if (!sp.started) {
        sp.started = Date.now();
        sp.timer = setInterval(tick, 1000);
        tick();
      }
      $sp("sp-hold").textContent = "Hold";
      show("connected", "on call");
    } else if (msg.state === "held") {
      $sp("sp-hold").textContent = "Resume";
      show("held", "on hold");
    } else if (msg.state === "answering" && sp.state === "ringing") {
      stopRing(); // answered on another of the agent's pages
      show("ended", "answered elsewhere");
    }
  }

  const REASONS = { caller: "the caller hung up", agent: "call ended", local: "call ended", transferred: "transferred",
    failed: "call ended", unavailable: "call withdrawn", shutdown: "the service is stopping",
    media_failed: "the media path failed" };

  // Live captions of the conversation (masked by the service: card numbers, keys), the newest last.
  function caption(msg) {
    if (msg.leg !== sp.leg) return;
    const list = $sp("sp-captions");
    const li = el("li", null, "seg-" + msg.speaker);
    li.append(el("span", msg.speaker, "speaker"), " ", el("span", msg.kind === "dtmf" ? `keys ${msg.text}` : msg.text));
    list.append(li);
    while (list.children.length > 6) list.firstChild.remove();
  }

  function onMessage(msg) {
    if (msg.type === "rtc_offer") offered(msg);
    else if (msg.type === "rtc_caption") caption(msg);
    else if (msg.type === "rtc_state") onState(msg);
    else if (msg.type === "rtc_end" && msg.leg === sp.leg && sp.state !== "ended") ended(REASONS[msg.reason] || "call ended");
    else if (msg.type === "rtc_registered") { if (sp.state === "idle" || sp.state === "offline") show("idle", "ready"); }
    else if (msg.type === "rtc_error" && msg.leg && msg.leg === sp.leg) $sp("sp-sent").textContent = msg.error;
  }

  function connect(agentId, delay) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = sp.ws = new WebSocket(`${proto}//${location.host}/api/v1/agents/${encodeURIComponent(agentId)}/events`);
    ws.onopen = () => { delay = 500; ws.send(JSON.stringify({ type: "rtc_register" })); };
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      if (msg && typeof msg.type === "string" && msg.type.startsWith("rtc_")) onMessage(msg);
    };
    ws.onclose = () => {
      if (sp.state === "idle") show("offline", "reconnecting…");
      setTimeout(() => connect(agentId, Math.min(delay * 2, 10000)), delay);
    };
  }

  async function start() {
    const resp = await fetch("/agent/api/me", { credentials: "same-origin" });
    if (!resp.ok) return;
    const me = (await resp.json()).agent;
    if (!me || !String(me.sip_uri || "").startsWith("browser:")) return; // calls ring a SIP phone
    build();
    show("offline", "connecting…");
    connect(me.id, 500);
  }

  start();
})();
