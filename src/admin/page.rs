//! The status page: one self-contained HTML document (no external assets)
//! that polls `/status.json` every 2 s and shows the hit ratio, requests per
//! second, synthetic 503s and each backend's health as a coloured dot.

/// The page. A `?token=` in its URL is sent on to `/status.json`.
pub(super) const HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Shellac status</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2em; color: #222; background: #fafafa; }
  h1 { font-size: 1.3em; margin: 0 0 1em; }
  .tiles { display: flex; gap: 1em; flex-wrap: wrap; }
  .tile { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .8em 1.2em; min-width: 9em; }
  .tile .value { font-size: 1.8em; font-weight: 600; }
  .tile .label { color: #666; font-size: .85em; }
  table { border-collapse: collapse; margin-top: 1.5em; background: #fff; }
  th, td { text-align: left; padding: .35em .9em; border-bottom: 1px solid #eee; }
  .dot { display: inline-block; width: .8em; height: .8em; border-radius: 50%; vertical-align: middle; }
  .dot.healthy { background: #2e9e44; }
  .dot.sick { background: #d33; }
  .probe { font-family: ui-monospace, monospace; }
  #error { color: #d33; }
</style>
</head>
<body>
<h1>Shellac status <span id="state"></span></h1>
<div class="tiles">
  <div class="tile"><div class="value" id="hit-ratio">–</div><div class="label">hit ratio</div></div>
  <div class="tile"><div class="value" id="rps">–</div><div class="label">requests/s</div></div>
  <div class="tile"><div class="value" id="synth503">–</div><div class="label">503s sent</div></div>
  <div class="tile"><div class="value" id="objects">–</div><div class="label">cached objects</div></div>
</div>
<table>
  <thead><tr><th></th><th>backend</th><th>address</th><th>probe window</th><th>in flight</th><th>queued</th><th>state</th></tr></thead>
  <tbody id="backends"></tbody>
</table>
<p id="error"></p>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? { "Authorization": "Bearer " + token } : {};
let previous = null;
function total(r) { return r.hit + r.hit_stale + r.miss + r.pass + r.synth; }
function text(el, value) { document.getElementById(el).textContent = value; }
async function refresh() {
  try {
    const response = await fetch("status.json", { headers, cache: "no-store" });
    if (!response.ok) throw new Error("status.json: HTTP " + response.status);
    const s = await response.json();
    const r = s.requests;
    const served = r.hit + r.hit_stale + r.miss + r.pass;
    text("hit-ratio", served ? (100 * (r.hit + r.hit_stale) / served).toFixed(1) + " %" : "–");
    const now = performance.now();
    if (previous) {
      const seconds = (now - previous.at) / 1000;
      text("rps", ((total(r) - previous.total) / seconds).toFixed(1));
    }
    previous = { at: now, total: total(r) };
    text("synth503", s.synth_503);
    text("objects", s.cache_objects);
    text("state", s.draining ? "(draining)" : s.maintenance ? "(maintenance)" : "");
    // The address as written, the addresses in use when they differ (a
    // host name), and a failing lookup (the last good answer is kept).
    const address = b => {
      const inUse = (b.addresses || []).join(", ");
      let cell = b.address;
      if (inUse && inUse !== b.address) cell += ` <span class="probe">${inUse}</span>`;
      if (b.resolve_error) {
        const why = String(b.resolve_error).replace(/[<>&"]/g, "");
        cell += ` <span title="${why}">(lookup failing)</span>`;
      }
      return cell;
    };
    const rows = s.backends.map(b => {
      const tr = document.createElement("tr");
      tr.className = "backend";
      tr.dataset.name = b.name;
      const cells = [
        `<span class="dot ${b.healthy ? "healthy" : "sick"}" title="${b.healthy ? "healthy" : "sick"}"></span>`,
        b.name, address(b), `<span class="probe">${b.probe ?? "no probe"}</span>`,
        b.in_flight, b.queued,
        b.forced !== "auto" ? "forced " + b.forced : b.ejected ? "ejected" : b.healthy ? "healthy" : "sick",
      ];
      for (const c of cells) { const td = document.createElement("td"); td.innerHTML = String(c); tr.appendChild(td); }
      return tr;
    });
    document.getElementById("backends").replaceChildren(...rows);
    text("error", "");
  } catch (e) {
    text("error", String(e));
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"#;
