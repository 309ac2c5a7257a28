/* firebox console: live updates (Server-Sent Events), the call queue, the call panel, the
   map, keyboard shortcuts. Plain JavaScript, no build step.

   The queue is kept by call id: an event updates its row in place (no re-render of the
   table), and events are applied in batches, once per animation frame, so that a burst of
   events for 200 calls costs one layout. */
"use strict";
(function () {
  const body = document.body;
  const BASE = body.dataset.base || "";
  const CSRF = body.dataset.csrf || "";
  const handlers = {};
  const FB = (window.FB = { on, post, state: null });
  let lastSeq = 0;
  let source = null;

  function on(kind, fn) { (handlers[kind] = handlers[kind] || []).push(fn); }
  function emit(kind, ev) { for (const fn of handlers[kind] || []) fn(ev); }

  // --- talking to the server -------------------------------------------------------------

  function say(message) {
    const box = document.getElementById("alert");
    box.textContent = "";
    const p = document.createElement("p");
    p.textContent = message;
    box.appendChild(p);
    box.hidden = false;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { box.hidden = true; }, 8000);
  }
  FB.say = say;

  async function post(path, fields) {
    const reply = await fetch(BASE + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify(fields || {}),
      credentials: "same-origin",
    });
    let doc = null;
    try { doc = await reply.json(); } catch (e) { doc = null; }
    if (!reply.ok) {
      say((doc && (doc.detail || doc.title)) || ("HTTP " + reply.status));
      throw new Error("refused: " + reply.status);
    }
    return doc;
  }

  // Forms marked data-ajax post without leaving the page; the result comes back as events.
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-ajax")) return;
    e.preventDefault();
    const fields = {};
    for (const [k, v] of new FormData(form)) {
      if (k === "csrf") continue;
      if (k in fields) fields[k] = [].concat(fields[k], v); else fields[k] = v;
    }
    const path = new URL(form.action, location.href).pathname.slice(BASE.length);
    try { await post(path, fields); refreshSoon(form.closest("[data-live]"), true); } catch (err) { /* said */ }
  });

  // --- live parts of server-rendered pages --------------------------------------------------

  const liveKinds = { incidents: ["incident"], units: ["unit"], stats: ["stats", "call"], positions: ["position"], callbacks: ["callback"],
    outages: ["outage", "worklist"], alerts: ["alert"] };
  const pendingRefresh = new Set();
  const forced = new WeakSet();
  function refreshSoon(el, force) {
    if (!el) return;
    pendingRefresh.add(el);
    if (force) forced.add(el);
    // A burst of changes: one fetch per part every 250 ms at most (a throttle, so a steady
    // stream of events still refreshes).
    if (!refreshSoon.timer) refreshSoon.timer = setTimeout(() => { refreshSoon.timer = 0; flushRefresh(); }, 250);
  }
  async function flushRefresh() {
    const els = [...pendingRefresh];
    pendingRefresh.clear();
    for (const el of els) {
      const active = document.activeElement;
      const inside = el.contains(active) && active !== document.body;
      if (inside && !forced.has(el)) {
        // Someone is typing or choosing in it: refresh when they leave.
        el.addEventListener("focusout", () => refreshSoon(el), { once: true });
        continue;
      }
      forced.delete(el);
      // After our own action in it: refresh, and put the focus back on the same control.
      const row = inside && active.closest("[data-id]");
      const again = inside ? [row ? row.dataset.id : null, active.tagName, active.getAttribute("name") || active.type] : null;
      const reply = await fetch(el.dataset.src, { credentials: "same-origin" });
      if (!reply.ok) continue;
      el.innerHTML = await reply.text();
      if (again) {
        const scope = again[0] ? el.querySelector('[data-id="' + CSS.escape(again[0]) + '"]') : el;
        const target = scope && [...scope.querySelectorAll(again[1])].find((c) => (c.getAttribute("name") || c.type) === again[2]);
        if (target) target.focus();
      }
    }
  }
  function liveParts() {
    for (const el of document.querySelectorAll("[data-live]")) {
      for (const kind of liveKinds[el.dataset.live] || []) on(kind, () => refreshSoon(el));
      on("resync", () => refreshSoon(el));
      if (!el.innerHTML.trim()) refreshSoon(el);
    }
  }

  // --- the event stream ------------------------------------------------------------------------

  function connect(after) {
    if (source) source.close();
    const status = document.getElementById("live");
    source = new EventSource(BASE + "/events" + (after != null ? "?after=" + after : ""));
    source.onopen = () => { if (status) { status.textContent = "live"; status.className = "live ok"; } };
    source.onerror = () => { if (status) { status.textContent = "reconnecting…"; status.className = "live down"; } };
    source.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      ev.receivedAt = performance.now();
      lastSeq = Math.max(lastSeq, ev.seq || 0);
      if (ev.kind === "resync") { resync(); return; }
      emit(ev.kind, ev);
    };
  }

  async function resync() {
    // Missed too much: a fresh snapshot, then the stream from there.
    if (source) source.close();
    const reply = await fetch(BASE + "/api/state", { credentials: "same-origin" });
    if (!reply.ok) { setTimeout(resync, 2000); return; }
    FB.state = await reply.json();
    emit("resync", FB.state);
    emit("snapshot", FB.state);
    connect(FB.state.seq);
  }
  FB.start = async function () {
    const reply = await fetch(BASE + "/api/state", { credentials: "same-origin" });
    if (reply.status === 401) { location.href = BASE + "/signin"; return; }
    FB.state = await reply.json();
    emit("snapshot", FB.state);
    connect(FB.state.seq);
  };

  // --- the console page -------------------------------------------------------------------------

  const ORDER = { ringing: 0, held: 1, connected: 2, abandoned: 3 };
  const SHOWN = new Set(["ringing", "held", "connected"]);

  FB.console = function () {
    const tbody = document.getElementById("queue-body");
    const user = () => (FB.state && FB.state.user) || {};
    const rows = new Map(); // call id -> {tr, call, cells}
    const pendingCallbacks = new Set(); // call ids of abandoned calls still to call back
    let selected = null; // call id
    let pending = new Map(); // call id -> newest CallView not yet on screen
    let frame = 0;
    const metrics = window.__fbMetrics || null; // set by bench/console.py only

    function fmtWait(s) {
      s = Math.max(0, Math.floor(s));
      const m = Math.floor(s / 60);
      return (m ? m + ":" + String(s % 60).padStart(2, "0") : s + " s");
    }
    function where(loc) {
      if (!loc) return "no location";
      const c = loc.civic || {};
      const street = [c.HNO, c.HNS, c.PRD, c.RD, c.STS].filter(Boolean).join(" ");
      const civic = [street, c.A3].filter(Boolean).join(", ");
      const geo = loc.lat != null ? loc.lat.toFixed(5) + ", " + loc.lon.toFixed(5) + (loc.radius_m ? " ±" + Math.round(loc.radius_m) + " m" : "") : "";
      const shown = [civic, geo].filter(Boolean).join(" · ") || loc.shape;
      // The ESRP's default (the caller gave no usable location): never mistaken for the caller's.
      return loc.source === "default" ? "NO CALLER LOCATION (routing default " + shown + ")" : shown;
    }
    function shown(call) {
      return SHOWN.has(call.status) || (call.status === "abandoned" && pendingCallbacks.has(call.call_id));
    }
    function key(call) { return [ORDER[call.status] ?? 9, call.offered_at]; }
    function before(a, b) { const ka = key(a), kb = key(b); return ka[0] - kb[0] || (ka[1] < kb[1] ? -1 : ka[1] > kb[1] ? 1 : 0); }

    function makeRow(call) {
      const tr = document.createElement("tr");
      tr.tabIndex = -1;
      tr.dataset.callId = call.call_id;
      const cells = {};
      for (const name of ["status", "wait", "callback", "where", "medium", "position"]) {
        const td = document.createElement("td");
        td.className = name;
        tr.appendChild(td);
        cells[name] = td;
      }
      const badge = document.createElement("span");
      badge.className = "badge";
      cells.status.appendChild(badge);
      cells.badge = badge;
      tr.addEventListener("click", () => select(call.call_id, true));
      return { tr, cells, call: null };
    }
    function fill(entry, call) {
      const old = entry.call || {};
      const c = entry.cells;
      if (old.status !== call.status) { c.badge.textContent = call.status; c.badge.className = "badge s-" + call.status; }
      if (old.callback !== call.callback) c.callback.textContent = call.callback || "unknown";
      if (old.location !== call.location) c.where.textContent = where(call.location);
      if (old.medium !== call.medium) c.medium.textContent = call.medium === "text" ? "TEXT" : "voice";
      const pos = call.position || (call.offered_to || []).join(", ");
      if (c.position.textContent !== pos) c.position.textContent = pos;
      entry.call = call;
      entry.offered = Date.parse(call.offered_at);
      entry.answered = call.answered_at ? Date.parse(call.answered_at) : null;
      tick(entry, Date.now());
      entry.tr.setAttribute("aria-label", call.status + " call from " + (call.callback || "unknown number") + ", " + c.wait.textContent);
    }
    function tick(entry, now) {
      const call = entry.call;
      let text;
      if (call.status === "ringing" || call.status === "held") text = fmtWait((now - entry.offered) / 1000);
      else if (call.status === "connected" && entry.answered) text = "talk " + fmtWait((now - entry.answered) / 1000);
      else text = "";
      if (entry.cells.wait.textContent !== text) entry.cells.wait.textContent = text;
    }
    function place(entry) {
      // Rows stay ordered (status group, then longest waiting); move only when needed.
      const call = entry.call;
      let next = null;
      for (const other of tbody.children) {
        if (other === entry.tr) continue;
        const o = rows.get(other.dataset.callId);
        if (o && before(call, o.call)) { next = other; break; }
      }
      if (entry.tr.parentNode !== tbody || entry.tr.nextSibling !== next) {
        const prev = entry.tr.previousElementSibling;
        const prevCall = prev && rows.get(prev.dataset.callId);
        const nextRow = entry.tr.parentNode === tbody ? entry.tr.nextElementSibling : null;
        const nextCall = nextRow && rows.get(nextRow.dataset.callId);
        const inOrder = entry.tr.parentNode === tbody && (!prevCall || !before(call, prevCall.call)) && (!nextCall || !before(nextCall.call, call));
        if (!inOrder) tbody.insertBefore(entry.tr, next);
      }
    }
    function apply(call) {
      let entry = rows.get(call.call_id);
      if (!shown(call)) {
        if (entry) { entry.tr.remove(); rows.delete(call.call_id); }
      } else {
        const moved = !entry || !entry.call || entry.call.status !== call.status;
        if (!entry) { entry = makeRow(call); rows.set(call.call_id, entry); }
        fill(entry, call);
        if (moved) place(entry);
      }
      if (call.call_id === selected) showCall(call);
    }
    function flush() {
      frame = 0;
      const batch = pending;
      pending = new Map();
      for (const call of batch.values()) apply(call);
      counts();
      if (metrics) {
        const t = performance.now();
        for (const call of batch.values()) {
          const ev = call.__ev;
          if (ev) metrics.applied.push({ seq: ev.seq, received: ev.receivedAt, applied: t, sentMs: ev.sent_ms, nowMs: Date.now() });
        }
      }
    }
    function queueEvent(call, ev) {
      if (metrics) call.__ev = ev;
      pending.set(call.call_id, call);
      if (!frame) frame = requestAnimationFrame(flush);
    }
    function counts() {
      let ringing = 0;
      for (const e of rows.values()) if (e.call.status === "ringing") ringing++;
      document.getElementById("queue-count").textContent = ringing ? ringing + " ringing" : "";
      document.getElementById("queue-empty").hidden = rows.size > 0;
    }
    function rebuild(state) {
      rows.clear();
      tbody.textContent = "";
      pendingCallbacks.clear();
      for (const cb of state.callbacks || []) if (cb.status === "pending") pendingCallbacks.add(cb.call_id);
      const calls = [...(state.calls || [])].sort(before);
      const frag = document.createDocumentFragment();
      for (const call of calls) {
        if (!shown(call)) continue;
        const entry = makeRow(call);
        rows.set(call.call_id, entry);
        fill(entry, call);
        frag.appendChild(entry.tr);
      }
      tbody.appendChild(frag);
      counts();
      const targets = document.getElementById("transfer-targets");
      if (targets) {
        targets.textContent = "";
        for (const p of state.psaps || []) {
          if (p.id === state.psap.id) continue;
          const o = document.createElement("option");
          o.value = p.id; o.textContent = p.name;
          targets.appendChild(o);
        }
      }
      readyButton(state.positions || []);
      if (selected && rows.has(selected)) showCall(rows.get(selected).call); else if (selected) clearCall();
      if (window.L) drawUnits(state.units || []), drawIncidents(state.incidents || []);
    }

    // Wait times tick once a second: text only, no layout of other rows.
    setInterval(() => { const now = Date.now(); for (const e of rows.values()) tick(e, now); }, 1000);

    // --- selection and the call panel ---
    function ordered() { return [...tbody.children].map((tr) => tr.dataset.callId); }
    function select(id, focus) {
      if (selected && rows.has(selected)) rows.get(selected).tr.setAttribute("aria-selected", "false");
      selected = id;
      const entry = id && rows.get(id);
      if (!entry) { clearCall(); return; }
      for (const tr of tbody.children) tr.tabIndex = -1;
      entry.tr.tabIndex = 0;
      entry.tr.setAttribute("aria-selected", "true");
      if (focus) entry.tr.focus();
      showCall(entry.call);
    }
    function move(step) {
      const ids = ordered();
      if (!ids.length) return;
      let i = ids.indexOf(selected);
      i = i < 0 ? 0 : Math.min(ids.length - 1, Math.max(0, i + step));
      select(ids[i], true);
    }
    function clearCall() {
      document.getElementById("call-body").hidden = true;
      document.getElementById("call-none").hidden = false;
      document.getElementById("call-status").textContent = "";
      if (callerLayer) callerLayer.clearLayers();
    }
    function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; }
    function showCall(call) {
      document.getElementById("call-none").hidden = true;
      document.getElementById("call-body").hidden = false;
      const badge = document.getElementById("call-status");
      badge.textContent = call.status; badge.className = "badge s-" + call.status;
      text("cf-callback", call.callback || "unknown");
      text("cf-caller", call.caller_uri);
      text("cf-location", where(call.location) + (call.location ? " (" + call.location.source + (call.location.method ? ", " + call.location.method : "") + ")" : ""));
      text("cf-offered", new Date(call.offered_at).toLocaleTimeString() + (call.answered_at ? ", answered " + new Date(call.answered_at).toLocaleTimeString() : ""));
      text("cf-position", call.position || "—");
      text("cf-incident", call.incident_id || "—");
      const add = document.getElementById("cf-adddata");
      add.textContent = "";
      for (const block of call.additional_data || []) {
        const div = document.createElement("div");
        const fields = Object.entries(block.summary || {}).map(([k, v]) => k + ": " + v).join("; ");
        div.textContent = block.purpose.replace("EmergencyCallData.", "") + (fields ? " — " + fields : block.uri ? " — " + block.uri : "");
        add.appendChild(div);
      }
      if (!add.childNodes.length) add.textContent = "none";
      const textArea = document.getElementById("text-area");
      textArea.hidden = call.medium !== "text" && !(call.messages || []).length;
      const list = document.getElementById("transcript");
      if (list.dataset.callId !== call.call_id || list.children.length !== (call.messages || []).length) {
        list.textContent = "";
        list.dataset.callId = call.call_id;
        for (const m of call.messages || []) {
          const li = document.createElement("li");
          li.className = m.direction;
          li.textContent = (m.direction === "in" ? "Caller: " : (m.by || "Us") + ": ") + m.text;
          list.appendChild(li);
        }
        list.scrollTop = list.scrollHeight;
      }
      const answerThis = document.getElementById("btn-answer-this");
      if (answerThis) answerThis.hidden = call.status !== "ringing";
      drawCaller(call);
    }

    // --- actions ---
    function myCall() {
      // The call this position is on: the selected one if it is ours, else any of ours.
      const me = user().position;
      const sel = selected && rows.get(selected);
      if (sel && sel.call.position === me && (sel.call.status === "connected" || sel.call.status === "held")) return sel.call;
      for (const e of rows.values()) if (e.call.position === me && (e.call.status === "connected" || e.call.status === "held")) return e.call;
      return null;
    }
    async function act(path, fields) {
      const doc = await post(path, fields);
      if (doc && doc.call) { queueEvent(doc.call, null); select(doc.call.call_id, false); }
      return doc;
    }
    async function answer(callId) {
      try {
        const doc = await act("/calls/answer", callId ? { call_id: callId } : {});
        if (doc && doc.call) { select(doc.call.call_id, false); flush(); select(doc.call.call_id, true); }
      } catch (e) { /* said */ }
    }
    async function release() {
      const call = myCall();
      if (!call) { say("You have no call to release."); return; }
      try { await act("/calls/release", { call_id: call.call_id }); } catch (e) { /* said */ }
    }
    async function hold() {
      const call = myCall();
      if (!call) { say("You have no call to hold."); return; }
      try { await act("/calls/hold", { call_id: call.call_id, on: call.status === "held" ? "off" : "on" }); } catch (e) { /* said */ }
    }
    function readyButton(positions) {
      const btn = document.getElementById("btn-ready");
      if (!btn) return;
      const mine = positions.find((p) => p.id === user().position);
      const ready = !!mine && (mine.status === "available" || mine.status === "busy");
      btn.setAttribute("aria-pressed", String(ready));
      btn.textContent = mine ? (ready ? "Ready" : "Not ready") + " (" + mine.status + ")" : "Position signed out";
      btn.dataset.ready = ready ? "1" : "";
    }
    const click = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", fn); };
    click("btn-answer", () => answer(null));
    click("btn-answer-this", () => selected && answer(selected));
    click("btn-release", release);
    click("btn-hold", hold);
    click("btn-ready", async () => {
      const btn = document.getElementById("btn-ready");
      try { await post("/position/ready", { ready: btn.dataset.ready ? "off" : "on" }); } catch (e) { /* said */ }
    });
    const textForm = document.getElementById("text-form");
    if (textForm) textForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const box = document.getElementById("text-box");
      if (!selected || !box.value.trim()) return;
      try { await act("/calls/text", { call_id: selected, text: box.value }); box.value = ""; } catch (err) { /* said */ }
    });
    const transferForm = document.getElementById("transfer-form");
    if (transferForm) transferForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const target = document.getElementById("transfer-target").value.trim();
      if (!selected || !target) return;
      try { await act("/calls/transfer", { call_id: selected, target }); } catch (err) { /* said */ }
    });
    const ifc = document.getElementById("incident-from-call");
    if (ifc) ifc.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!selected) return;
      const fields = Object.fromEntries(new FormData(ifc));
      fields.call_id = selected;
      try {
        const doc = await post("/incidents", fields);
        const out = document.getElementById("ifc-result");
        out.textContent = "";
        const a = document.createElement("a");
        a.href = doc.url; a.textContent = "Incident created: open it";
        out.appendChild(a);
      } catch (err) { /* said */ }
    });

    // --- keyboard ---
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || t.isContentEditable;
      if (e.key === "Escape" && typing) { t.blur(); focusQueue(); e.preventDefault(); return; }
      if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
      const k = e.key;
      if (k === "a" || k === "A") answer(null);
      else if (k === "r" || k === "R") release();
      else if (k === "h" || k === "H") hold();
      else if (k === "q" || k === "Q") focusQueue();
      else if (k === "j" || k === "ArrowDown") { if (!t.closest || t.closest("#queue") || k === "j") move(1); else return; }
      else if (k === "k" || k === "ArrowUp") { if (!t.closest || t.closest("#queue") || k === "k") move(-1); else return; }
      else if (k === "Enter" && t.closest && t.closest("#queue") && t.dataset.callId) select(t.dataset.callId, true);
      else if (k === "t" || k === "T") { const box = document.getElementById("text-box"); if (box && !box.closest("[hidden]")) box.focus(); else say("The selected call is not a text call."); }
      else if (k === "i" || k === "I") { const f = document.getElementById("f-type"); if (f && !f.closest("[hidden]")) f.focus(); }
      else if (k === "?") { const h = document.getElementById("help"); h.open = !h.open; }
      else return;
      e.preventDefault();
    });
    function focusQueue() {
      const ids = ordered();
      if (!ids.length) { document.getElementById("queue").focus(); return; }
      select(selected && rows.has(selected) ? selected : ids[0], true);
    }
    document.getElementById("queue").tabIndex = 0;
    document.getElementById("queue").addEventListener("focus", (e) => { if (e.target.id === "queue" && rows.size) focusQueue(); });

    // --- map (Leaflet, vector layers only: no tiles) ---
    let map = null, callerLayer = null, unitLayer = null, incidentLayer = null;
    const unitMarkers = new Map(), incidentMarkers = new Map();
    if (window.L && document.getElementById("map")) {
      map = L.map("map", { zoomControl: true, attributionControl: false, preferCanvas: true, keyboard: true });
      map.setView([0, 0], 2);
      fetch(BASE + "/api/gis.geojson", { credentials: "same-origin" }).then((r) => r.json()).then((doc) => {
        const mine = FB.state && FB.state.psap.id;
        const layer = L.geoJSON(doc, {
          style: (f) => ({ color: "#44556b", weight: 1, fillColor: f.properties.psap_id === mine ? "#fff7d6" : "#eef2f5", fillOpacity: 0.9 }),
          onEachFeature: (f, l) => l.bindTooltip(f.properties.name || f.properties.id || ""),
        }).addTo(map);
        layer.bringToBack();
        FB.mapLayers.towns = layer;
        const bounds = layer.getBounds();
        if (bounds.isValid() && !callerLayer.getLayers().length) map.fitBounds(bounds);
      });
      callerLayer = L.layerGroup().addTo(map);
      incidentLayer = L.layerGroup().addTo(map);
      unitLayer = L.layerGroup().addTo(map);
      FB.map = map;
      FB.mapLayers = { towns: null, caller: callerLayer, units: unitMarkers, incidents: incidentMarkers };
    }
    function drawCaller(call) {
      if (!callerLayer) return;
      callerLayer.clearLayers();
      const loc = call.location;
      if (!loc || loc.lat == null) return;
      if (loc.radius_m) L.circle([loc.lat, loc.lon], { radius: loc.radius_m, color: "#d4000f", weight: 2, fillOpacity: 0.15 }).addTo(callerLayer);
      L.circleMarker([loc.lat, loc.lon], { radius: 9, color: "#fff", weight: 3, fillColor: "#d4000f", fillOpacity: 1, className: "caller-marker" })
        .bindTooltip("Caller " + (call.callback || ""), { permanent: true, direction: "top" }).addTo(callerLayer);
      // Close enough to see the uncertainty circle against the streets' scale.
      if (loc.radius_m) map.fitBounds(L.latLng(loc.lat, loc.lon).toBounds(Math.max(4 * loc.radius_m, 400)));
      else map.setView([loc.lat, loc.lon], Math.max(map.getZoom(), 15));
    }
    const UNIT_COLOUR = { available: "#0a7d28", dispatched: "#b35c00", "en route": "#b35c00", "on scene": "#d4000f", cleared: "#2b6cb0", "out of service": "#55606e" };
    function drawUnit(u) {
      if (!unitLayer) return;
      let m = unitMarkers.get(u.id);
      if (!u.position) { if (m) { m.remove(); unitMarkers.delete(u.id); } return; }
      if (!m) { m = L.circleMarker([u.position.lat, u.position.lon], { radius: 6, weight: 1, color: "#000", fillOpacity: 1 }).addTo(unitLayer); unitMarkers.set(u.id, m); }
      m.setLatLng([u.position.lat, u.position.lon]);
      m.setStyle({ fillColor: UNIT_COLOUR[u.status] || "#555" });
      m.bindTooltip(u.id + " " + u.kind + " — " + u.status);
    }
    function drawUnits(units) { for (const u of units) drawUnit(u); }
    function drawIncident(i) {
      if (!incidentLayer) return;
      let m = incidentMarkers.get(i.id);
      const p = i.location && i.location.point;
      if (!p || i.status === "closed") { if (m) { m.remove(); incidentMarkers.delete(i.id); } return; }
      if (!m) { m = L.circleMarker([p.lat, p.lon], { radius: 8, weight: 3, color: "#000", fillColor: "#ffcc00", fillOpacity: 1 }).addTo(incidentLayer); incidentMarkers.set(i.id, m); }
      m.setLatLng([p.lat, p.lon]);
      m.bindTooltip(i.subtype + " (P" + i.priority + ", " + i.status + ")");
    }
    function drawIncidents(list) { for (const i of list) drawIncident(i); }

    // --- events ---
    on("snapshot", rebuild);
    on("call", (ev) => queueEvent(ev.call, ev));
    on("text", (ev) => queueEvent(ev.call, ev));
    on("callback", (ev) => {
      const cb = ev.callback;
      if (cb.status === "pending") pendingCallbacks.add(cb.call_id); else pendingCallbacks.delete(cb.call_id);
      const entry = rows.get(cb.call_id);
      if (entry) queueEvent(entry.call, null);
      else if (cb.status === "pending") fetch(BASE + "/api/calls/" + encodeURIComponent(cb.call_id), { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : null)).then((d) => d && queueEvent(d.call, null));
    });
    on("position", (ev) => {
      if (!FB.state) return;
      const list = FB.state.positions.filter((p) => p.id !== ev.position.id);
      list.push(ev.position);
      FB.state.positions = list;
      readyButton(list);
    });
    on("unit", (ev) => drawUnit(ev.unit));
    on("incident", (ev) => drawIncident(ev.incident));
    FB.queue = { rows, select, flush: () => flush() };
  };

  // Subtype choices follow the type (every incident form).
  for (const sel of document.querySelectorAll("select[data-subtypes]")) {
    const choices = JSON.parse(sel.dataset.subtypes);
    const sub = document.getElementById(sel.id.replace("-type", "-subtype"));
    sel.addEventListener("change", () => {
      sub.textContent = "";
      for (const s of choices[sel.value] || []) { const o = document.createElement("option"); o.textContent = s; sub.appendChild(o); }
    });
  }

  // Location search (walk-ins, entries by hand): a combobox over GET /api/location?q=.
  // Typing asks the LVF (debounced); arrows move through the results, Enter takes one (and
  // does not submit the form), Escape closes. Taking an address fills the civic fields and
  // lets the server place it (it validates again); taking a landmark names it.
  for (const box of document.querySelectorAll("[data-locsearch]")) {
    const fid = box.dataset.locsearch;
    const input = document.getElementById(fid + "-q");
    const list = document.getElementById(fid + "-q-results");
    const chosen = document.getElementById(fid + "-q-chosen");
    const landmark = document.getElementById(fid + "-landmark");
    const field = (name) => document.getElementById(fid + "-" + name);
    let results = [], active = -1, timer = 0, asked = 0;

    function describe(c) {
      const state = c.validated === true ? "validated" : c.validated === false ? "NOT validated" : "not checked";
      const psap = c.psap ? " · PSAP " + (c.psap.name || c.psap.uri) : "";
      const zone = (c.zone || []).map((z) => z.name).filter(Boolean).join(", ");
      return state + psap + (zone ? " · " + zone : "");
    }
    function close() { list.hidden = true; input.setAttribute("aria-expanded", "false"); input.removeAttribute("aria-activedescendant"); active = -1; }
    function mark(i) {
      active = i;
      [...list.children].forEach((li, n) => li.setAttribute("aria-selected", n === i ? "true" : "false"));
      const li = list.children[i];
      if (li && li.id) { input.setAttribute("aria-activedescendant", li.id); li.scrollIntoView({ block: "nearest" }); }
    }
    function render() {
      list.textContent = "";
      results.forEach((c, i) => {
        const li = document.createElement("li");
        li.id = fid + "-q-opt-" + i;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.dataset.validated = String(c.validated);
        const main = document.createElement("strong");
        main.textContent = c.label;
        const sub = document.createElement("span");
        sub.className = "sub";
        sub.textContent = describe(c);
        li.append(main, sub);
        li.addEventListener("mousedown", (e) => { e.preventDefault(); take(i); });
        list.appendChild(li);
      });
      if (!results.length) {
        const li = document.createElement("li");
        li.className = "empty";
        li.textContent = "Nothing found: the text as typed will be used, marked unvalidated.";
        list.appendChild(li);
      }
      list.hidden = false;
      input.setAttribute("aria-expanded", "true");
      active = -1;
    }
    function take(i) {
      const c = results[i];
      if (!c) return;
      const civic = c.civic || {};
      const street = ["PRD", "RD", "STS", "POD"].map((k) => civic[k]).filter(Boolean).join(" ");
      if (field("hno")) field("hno").value = c.landmark ? "" : civic.HNO ? civic.HNO + (civic.HNS || "") : "";
      if (field("street")) field("street").value = c.landmark ? "" : street;
      if (field("town")) field("town").value = c.landmark ? "" : civic.A3 || "";
      // The server places an address itself (the LVF); only a landmark's own point is exact.
      if (field("lat")) field("lat").value = "";
      if (field("lon")) field("lon").value = "";
      landmark.value = c.landmark || "";
      input.value = c.label;
      chosen.textContent = "Location: " + c.label + " — " + describe(c);
      chosen.dataset.validated = String(c.validated);
      close();
    }
    async function ask() {
      const q = input.value.trim();
      if (q.length < 2) { close(); return; }
      const n = ++asked;
      const reply = await fetch(BASE + "/api/location?q=" + encodeURIComponent(q), { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (n !== asked) return; // an older answer: a newer question is on its way
      if (!reply.ok) { say("Location search failed: HTTP " + reply.status); return; }
      const doc = await reply.json();
      results = doc.candidates || [];
      render();
    }
    input.addEventListener("input", () => {
      landmark.value = "";
      chosen.textContent = "";
      clearTimeout(timer);
      timer = setTimeout(ask, 200);
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        if (list.hidden) { ask(); return; }
        const n = results.length;
        if (!n) return;
        mark(e.key === "ArrowDown" ? (active + 1) % n : (active - 1 + n) % n);
      } else if (e.key === "Enter" && !list.hidden && active >= 0) {
        e.preventDefault();
        take(active);
      } else if (e.key === "Escape" && !list.hidden) {
        e.preventDefault();
        e.stopPropagation();
        close();
      }
    });
    input.addEventListener("blur", () => setTimeout(close, 150));
    // The stations a person may walk into, for the station field's suggestions.
    const stations = document.getElementById(fid + "-stations");
    if (stations) {
      fetch(BASE + "/api/location/stations", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : null)).then((doc) => {
        for (const s of (doc && doc.stations) || []) {
          const o = document.createElement("option");
          o.value = s.id;
          o.label = s.name;
          stations.appendChild(o);
        }
      });
    }
  }

  // Start once every script of the page has run (the console's own set-up registers
  // handlers for the first snapshot).
  document.addEventListener("DOMContentLoaded", () => { liveParts(); if (CSRF) FB.start(); });
})();
