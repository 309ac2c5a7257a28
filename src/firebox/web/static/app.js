// The demo page: draws the towns from GeoJSON into an SVG (equirectangular, scaled by
// cos(latitude)), asks the ECRF over LoST when the map is clicked, and polls live counts
// (LoST lookups, and SIP 911 calls offered / answered per PSAP queue).
"use strict";
const LOST_NS = "urn:ietf:params:xml:ns:lost1";
const svg = document.getElementById("map");
let proj = null;

function makeProjection(bbox) {
  const [minx, miny, maxx, maxy] = bbox;
  const k = Math.cos(((miny + maxy) / 2) * Math.PI / 180);
  const w = (maxx - minx) * k, h = maxy - miny;
  svg.setAttribute("viewBox", `0 0 ${w * 1000} ${h * 1000}`);
  return {
    fwd: ([x, y]) => [(x - minx) * k * 1000, (maxy - y) * 1000],
    inv: (px, py) => [px / (k * 1000) + minx, maxy - py / 1000],
  };
}

function ringPath(ring) {
  return ring.map((p, i) => (i ? "L" : "M") + proj.fwd(p).map((v) => v.toFixed(2)).join(",")).join("") + "Z";
}

function geomPath(g) {
  const polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
  return polys.map((poly) => poly.map(ringPath).join("")).join("");
}

function colour(i) { return `hsl(${(i * 137.508) % 360} 55% 72%)`; }

async function load() {
  const [state, towns] = await Promise.all([
    fetch("api/state").then((r) => r.json()),
    fetch("api/towns.geojson").then((r) => r.json()),
  ]);
  document.getElementById("authority").textContent = "— " + state.authority;
  proj = makeProjection(state.bbox);
  const psapIndex = new Map(state.psaps.map((p, i) => [p.id, i]));
  const frag = document.createDocumentFragment();
  for (const f of towns.features) {
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", geomPath(f.geometry));
    path.setAttribute("fill", colour(psapIndex.get(f.properties.psap_id) ?? 0));
    path.dataset.psap = f.properties.psap_id ?? "";
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${f.properties.name} (pop. ${f.properties.population ?? "?"}) — ${f.properties.psap_id ?? ""}`;
    path.appendChild(title);
    frag.appendChild(path);
  }
  svg.appendChild(frag);
  svg.addEventListener("click", onClick);
  refresh();
  setInterval(refresh, 2000);
  demo(state);
}

// --- the demo's "break something" panel (only when the node mounts /demo: firebox demo) ------

async function demo(state) {
  const r = await fetch("demo/faults", { cache: "no-store" });
  if (!r.ok) return;  // firebox serve: no controls
  document.getElementById("demobox").hidden = false;
  const sel = document.getElementById("cut-psap");
  for (const p of state.psaps) { const o = document.createElement("option"); o.value = p.id; o.textContent = `${p.name} (${p.id})`; sel.appendChild(o); }
  const names = new Map(state.psaps.map((p) => [p.id, p.name]));
  const say = (text, cls) => { const out = document.getElementById("demo-result"); out.textContent = text; out.className = cls || ""; };
  async function act(path, body) {
    const reply = await fetch("demo/faults/" + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
    const doc = await reply.json();
    if (!reply.ok) { say(doc.detail || doc.title, "err"); return null; }
    draw(doc.status);
    return doc.done;
  }
  document.getElementById("bad-rule").addEventListener("click", async () => {
    const d = await act("bad-rule");
    if (!d) return;
    if (d.refused) say(`firebox refused the rule (change ${d.change}): ${d.reason} It would have hit ${d.hits} recent calls, e.g. ${d.examples.join(", ")}. Nothing was applied.`, "refused");
    else say(`The change system did not refuse it: change ${d.change} is in shadow only (not applied).`, "err");
  });
  document.getElementById("firewall").addEventListener("click", async () => {
    const on = !(document.getElementById("firewall").getAttribute("aria-pressed") === "true");
    const d = await act("firewall", { on });
    if (d) say(on ? "A firewall in front of the BCF now answers every INVITE 403 (outside firebox's rule system). Watch the monitor notice." : "The firewall passes calls again.");
  });
  document.getElementById("cut").addEventListener("click", async () => {
    const d = await act("cut", { psap: sel.value });
    if (d) say(`${d.name} is cut off: its calls time out. Watch the monitor confirm it and routing send its calls to the alternate.`);
  });
  document.getElementById("heal").addEventListener("click", async () => {
    const d = await act("heal");
    if (d) say("Healed: the monitor clears each outage after its test calls succeed again.");
  });
  function draw(s) {
    const fw = document.getElementById("firewall");
    fw.setAttribute("aria-pressed", String(s.firewall));
    fw.textContent = s.firewall ? `Firewall blocking ingress (${s.firewall_blocked} INVITEs refused): lift it` : "Firewall outside firebox blocks ingress";
    const rows = [...((s.outages && s.outages.current) || []), ...((s.outages && s.outages.recent) || [])];
    document.querySelector("#demo-outages tbody").replaceChildren(...rows.map((o) => {
      const tr = document.createElement("tr");
      tr.className = o.state; tr.dataset.key = o.key; tr.dataset.state = o.state;
      const what = o.scope === "psap" ? `${names.get(o.key) || o.key} (${o.key})` : o.key;
      for (const v of [o.state, o.scope, what, (o.start || "").slice(11, 19), o.cause, o.calls_affected]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      return tr;
    }));
    const down = new Set(), suspect = new Set();
    for (const o of (s.outages && s.outages.current) || []) {
      if (o.scope !== "psap" && o.scope !== "statewide") continue;
      const set = o.state === "confirmed" ? down : suspect;
      if (o.scope === "statewide") state.psaps.forEach((p) => set.add(p.id)); else set.add(o.key);
    }
    for (const path of svg.querySelectorAll("path[data-psap]")) {
      path.classList.toggle("down", down.has(path.dataset.psap));
      path.classList.toggle("suspect", !down.has(path.dataset.psap) && suspect.has(path.dataset.psap));
    }
    const rr = Object.entries(s.rerouted || {});
    document.getElementById("demo-rerouted").textContent = s.outages === null ? "The monitor is not running." :
      (rr.length ? "Calls carried around a failure (answered elsewhere), by the PSAP they were meant for: " +
        rr.map(([k, n]) => `${names.get(k) || k} ${n}`).join(" · ") : "No call rerouted yet.") +
      (s.cut.length ? ` Cut now: ${s.cut.join(", ")}.` : "");
  }
  const poll = async () => { const x = await fetch("demo/faults", { cache: "no-store" }); if (x.ok) draw(await x.json()); };
  poll();
  setInterval(poll, 1000);
}

async function refresh() {
  const s = await fetch("api/stats").then((r) => r.json());
  document.getElementById("summary").textContent =
    `${s.towns} towns · ${s.psaps.length} PSAPs · ${s.queries} LoST queries answered · ${s.errors} errors` +
    (s.sip ? ` · ${s.calls.answered} 911 calls answered` : "");
  const body = document.querySelector("#psaps tbody");
  body.replaceChildren(...s.psaps.map((p) => {
    const tr = document.createElement("tr");
    for (const [v, cls] of [[p.name, ""], [p.towns, "n"], [p.business_line, ""], [p.queries, "n"]]) {
      const td = document.createElement("td"); td.textContent = v; if (cls) td.className = cls; tr.appendChild(td);
    }
    return tr;
  }));
  if (s.sip) showCalls(s);
}

function showCalls(s) {
  document.getElementById("callsbox").hidden = false;
  const c = s.calls;
  document.getElementById("callsummary").textContent =
    `${c.sent} calls sent by the carrier · ${c.answered} answered · ${c.unanswered} failed without an answer · ` +
    `${c.in_flight} in progress · ${c.failovers} failovers`;
  const rows = s.psaps.filter((p) => p.calls.offered || p.calls.routed)
    .sort((a, b) => b.calls.offered - a.calls.offered);
  document.querySelector("#calls tbody").replaceChildren(...rows.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.psap = p.id;
    const cells = [[p.name, ""], [p.calls.routed, "n routed"], [p.calls.offered, "n offered"], [p.calls.answered, "n answered"],
      [p.calls.ended, "n ended"], [p.calls.failed_over, "n failed"]];
    for (const [v, cls] of cells) {
      const td = document.createElement("td"); td.textContent = v; if (cls) td.className = cls; tr.appendChild(td);
    }
    return tr;
  }));
}

async function onClick(ev) {
  const pt = svg.createSVGPoint(); pt.x = ev.clientX; pt.y = ev.clientY;
  const loc = pt.matrixTransform(svg.getScreenCTM().inverse());
  const [lon, lat] = proj.inv(loc.x, loc.y);
  svg.querySelectorAll("circle.q").forEach((c) => c.remove());
  const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
  c.setAttribute("class", "q"); c.setAttribute("cx", loc.x); c.setAttribute("cy", loc.y); c.setAttribute("r", 6);
  svg.appendChild(c);
  const body = `<?xml version="1.0" encoding="UTF-8"?>
<findService xmlns="${LOST_NS}" xmlns:gml="http://www.opengis.net/gml" serviceBoundary="reference">
 <location id="click" profile="geodetic-2d"><gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>${lat.toFixed(6)} ${lon.toFixed(6)}</gml:pos></gml:Point></location>
 <service>urn:service:sos</service>
</findService>`;
  const r = await fetch("lost", { method: "POST", headers: { "Content-Type": "application/lost+xml" }, body });
  const doc = new DOMParser().parseFromString(await r.text(), "application/xml");
  const out = document.getElementById("answer");
  const m = doc.getElementsByTagNameNS(LOST_NS, "mapping")[0];
  const pick = (el, n) => el.getElementsByTagNameNS(LOST_NS, n)[0]?.textContent ?? "";
  if (!m) {
    const e = doc.documentElement.firstElementChild;
    out.innerHTML = "";
    const p = document.createElement("p"); p.className = "err";
    p.textContent = `${doc.documentElement.localName}: ${e ? e.localName + " — " + (e.getAttribute("message") || "") : ""}`;
    out.appendChild(p);
    return;
  }
  const rows = [["point", `${lat.toFixed(5)}, ${lon.toFixed(5)}`], ["PSAP", pick(m, "displayName")],
    ["URI", pick(m, "uri")], ["dial", pick(m, "serviceNumber")], ["source", m.getAttribute("source")],
    ["expires", m.getAttribute("expires")]];
  const dl = document.createElement("dl");
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  out.replaceChildren(dl);
}

load();
