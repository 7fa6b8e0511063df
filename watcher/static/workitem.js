// One workitem: its facts, timeline, inputs and results, updated live from the stream.
"use strict";
(() => {
  const {esc, duration, pct, stateClass, time} = window.aiw;
  const uid = decodeURIComponent(location.pathname.split("/").pop());
  let row = null;

  function render() {
    document.getElementById("missing").hidden = !!row;
    if (!row) return;
    document.title = `aiw watcher — ${row.procedure || uid}`;
    document.getElementById("title").innerHTML = `${esc(row.procedure || "Workitem")} <span class="state ${stateClass(row.state)}" id="state">${esc(row.state)}</span>`;
    const t = Date.now() / 1000;
    const facts = [
      ["Workitem UID", row.uid], ["Priority", row.priority], ["Patient", `${row.patient} (${row.patient_id})`],
      ["Study (accession)", `${row.accession} — ${row.study_uid}`], ["Modality", row.modality], ["Performer", row.performer],
      ["Progress", row.progress == null ? row.progress_text || "—" : `${pct(row.progress)} ${row.progress_text || ""}`],
      ["Scheduled", time(row.created)], ["In this state for", duration(t - row.state_since)],
      ["Input readiness", row.readiness], ["Worklist", row.worklist],
    ];
    if (row.reason) facts.push(["Discontinuation reason", row.reason]);
    if (row.cancel_request) facts.push(["Cancel requested", `by ${row.cancel_request.requester}${row.cancel_request.reason ? ": " + row.cancel_request.reason : ""}`]);
    if (row.state === "COMPLETED" || row.state === "CANCELED")
      facts.push(["Final workitem", row.final_recorded ? `recorded${row.lock_released ? "; deletion lock released" : ""}` : "being retrieved…"]);
    document.getElementById("facts").innerHTML = "<dl>" + facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("") + "</dl>";

    const res = document.querySelector("#results div");
    if (row.outputs && row.outputs.length) {
      res.innerHTML = `<p class="preliminary" role="note"><strong>PRELIMINARY</strong> — AI results, not yet verified by a radiologist. Do not use for diagnosis before review.</p>` +
        (row.viewer_url ? `<p><a id="viewer" class="button" href="${esc(row.viewer_url)}" target="_blank" rel="noopener">Open results in viewer</a></p>` : '<p class="muted">No viewer configured (viewer_url_template).</p>') +
        "<table><thead><tr><th>Kind</th><th>Series</th><th>Instances</th><th>Retrieve URL</th></tr></thead><tbody>" +
        row.outputs.map((o) => `<tr><td>${esc(o.kinds.join(", "))} <span class="badge prelim">preliminary</span></td><td>${esc(o.series_uid)}</td><td>${o.instances}</td><td>${esc(o.url)}</td></tr>`).join("") + "</tbody></table>";
    } else {
      res.innerHTML = `<p class="muted">${row.state === "COMPLETED" ? "Completed without output objects." : "No results yet."}</p>`;
    }
    document.getElementById("cancel").hidden = !(row.cancel_enabled && (row.state === "SCHEDULED" || row.state === "IN PROGRESS"));
    document.querySelector("#timeline ol").innerHTML = row.timeline.map((e) =>
      `<li class="tl-${esc(e.kind)}"><time>${esc(time(e.at))}</time> ${esc(e.text)}</li>`).join("");
    document.querySelector("#inputs tbody").innerHTML = (row.inputs || []).map((i) =>
      `<tr><td>${esc(i.study_uid)}</td><td>${esc(i.series_uid)}</td><td>${i.instances}</td><td>${esc(i.modalities.join(", "))}</td><td>${esc(i.url)}</td></tr>`).join("");
  }

  const source = new EventSource(`/api/stream?uid=${encodeURIComponent(uid)}`);
  source.addEventListener("detail", (e) => {
    const d = JSON.parse(e.data);
    aiw.showStatus(d.status);
    row = d.row || row;
    render();
    window.aiw.loaded = window.aiw.loaded || Date.now();
  });
  source.onerror = () => aiw.showStatus(null, "down");
  setInterval(render, 1000);

  const form = document.getElementById("cancel-form");
  form.token.value = sessionStorage.getItem("aiw.token") || "";
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem("aiw.token", form.token.value);
    const out = document.getElementById("cancel-result");
    out.textContent = "sending…";
    const resp = await fetch(`/api/workitems/${encodeURIComponent(uid)}/cancel`, {
      method: "POST", headers: {"content-type": "application/json", authorization: `Bearer ${form.token.value}`},
      body: JSON.stringify({reason: form.reason.value}),
    });
    const body = await resp.json().catch(() => ({}));
    out.textContent = resp.ok ? `Cancellation requested by ${body.by}.` : `Refused: ${body.error || resp.status}`;
    out.className = resp.ok ? "ok" : "error";
  });
})();
