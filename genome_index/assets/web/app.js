// The genome-index web page: plain JS over the server's JSON API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem("genome-index-token");

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const given = prompt("This server needs its access token:");
    if (given) { sessionStorage.setItem("genome-index-token", given); return api(path, options); }
  }
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function cell(row, value, numeric) {
  const td = document.createElement("td");
  if (numeric) td.className = "num";
  if (value instanceof Node) td.appendChild(value); else td.textContent = value === null || value === undefined ? "" : value;
  row.appendChild(td);
}

const number = (value, digits) => (value === null || value === undefined ? "" : Number(value).toFixed(digits));
const FRACTION = 4; // every similarity, identity and coverage with the same decimals
const grouped = (value) => Number(value).toLocaleString("en");
const baseName = (path) => String(path).split(/[\\/]/).pop();

function fastaLink(text, genomeId, params, fileName) {
  const link = document.createElement("a");
  const query = new URLSearchParams(params).toString();
  link.href = `/genomes/${genomeId}/fasta` + (query ? "?" + query : "");
  link.textContent = text; link.className = "fasta-link"; link.download = fileName;
  return link;
}

async function showStore() {
  const info = await api("/info");
  const s = info.settings;
  const mib = Object.values(info.disk_bytes).reduce((a, b) => a + b, 0) / 1048576;
  $("store").textContent = `${s.model} · layer ${s.layer} · ${info.counts.genomes} genomes · ` +
    `${(info.bases / 1e6).toFixed(1)} Mbp · labels: ${info.labels.join(", ") || "none"} · ${mib.toFixed(1)} MiB`;
  $("store").dataset.labels = JSON.stringify(info.labels);
  if (info.compare.length) {
    $("figures").hidden = false;
    $("figure-list").replaceChildren(...info.compare.filter((n) => n.endsWith(".png") || n.endsWith(".svg")).map((name) => {
      const img = document.createElement("img"); img.src = "/compare/" + name; img.alt = name; return img;
    }));
  }
}

function showHits(hits) {
  const labels = JSON.parse($("store").dataset.labels || "[]");
  const columns = ["rank", "name", "identity", "query coverage", "where", "score", "containment", "ANI estimate", ...labels];
  $("hits-head").replaceChildren(...columns.map((c) => { const th = document.createElement("th"); th.textContent = c; return th; }));
  const body = $("hits-body");
  body.replaceChildren();
  for (const hit of hits) {
    const row = document.createElement("tr");
    row.className = "hit";
    cell(row, hit.rank + (hit.tied ? "=" : ""), true);
    const link = document.createElement("a");
    link.href = "#/genomes/" + hit.genome_id; link.textContent = hit.name; link.className = "genome-link";
    cell(row, link);
    cell(row, number(hit.identity, FRACTION), true);
    cell(row, number(hit.query_coverage, FRACTION), true);
    if (hit.target_record) {
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = `${hit.target_record}:${grouped(hit.target_start)}-${grouped(hit.target_end)} (${hit.strand}) `;
      const region = { record: hit.target_record, start: hit.target_start, end: hit.target_end };
      if (hit.strand === "-") region.rc = "true";
      where.appendChild(fastaLink("FASTA", hit.genome_id, region, `${hit.name}_${hit.target_start}-${hit.target_end}.fa`));
      cell(row, where);
    } else cell(row, "");
    cell(row, number(hit.score, FRACTION), true);
    cell(row, number(hit.containment, FRACTION), true);
    cell(row, number(hit.ani_estimate, FRACTION), true);
    for (const label of labels) cell(row, hit[label] ?? hit["label." + label]);
    body.appendChild(row);
  }
  $("hits-wrap").hidden = hits.length === 0;
}

function showGathered(found) {
  const labels = JSON.parse($("store").dataset.labels || "[]");
  const columns = ["rank", "name", "f_sample", "f_genome", "reads", "abundance", "depth", "breadth", "identity", ...labels];
  $("hits-head").replaceChildren(...columns.map((c) => { const th = document.createElement("th"); th.textContent = c; return th; }));
  $("hits-body").replaceChildren(...found.genomes.map((genome) => {
    const row = document.createElement("tr");
    row.className = "hit";
    cell(row, genome.rank, true);
    const link = document.createElement("a");
    link.href = "#/genomes/" + genome.genome_id; link.textContent = genome.name; link.className = "genome-link";
    cell(row, link);
    for (const key of ["f_sample", "f_genome"]) cell(row, number(genome[key], FRACTION), true);
    cell(row, genome.reads === null ? "" : grouped(Math.round(genome.reads)), true);
    for (const key of ["abundance", "depth", "breadth", "identity"]) cell(row, number(genome[key], FRACTION), true);
    for (const label of labels) cell(row, genome[label] ?? genome["label." + label]);
    return row;
  }));
  $("hits-wrap").hidden = found.genomes.length === 0;
}

async function runGather() {
  const verify = $("align").checked ? "" : "?verify=false";
  const found = await api("/gather" + verify, { method: "POST", headers: { "Content-Type": "text/plain" }, body: $("fasta").value });
  showGathered(found);
  const s = found.summary;
  const mapped = s.mapped === null ? "" : `, ${grouped(s.mapped)} mapped`;
  return `${found.genomes.length} genome(s) in ${grouped(s.records)} reads or contigs (${(s.bases / 1e6).toFixed(2)} Mbp${mapped})`;
}

async function search(event) {
  event.preventDefault();
  const status = $("status");
  status.className = ""; status.textContent = $("task").value === "gather" ? "gathering…" : "searching…";
  const body = { fasta: $("fasta").value, k: Number($("k").value), mode: $("mode").value, align: $("align").checked };
  try {
    const started = performance.now();
    const seconds = () => ((performance.now() - started) / 1000).toFixed(2);
    if ($("task").value === "gather") {
      const said = await runGather();
      status.textContent = `${said} in ${seconds()} s`;
      return;
    }
    const hits = await api("/query", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    showHits(hits);
    status.textContent = `${hits.length} hits in ${seconds()} s`;
  } catch (error) {
    $("hits-wrap").hidden = true; status.className = "error"; status.textContent = error.message;
  }
}

const when = (iso) => iso.slice(0, 16).replace("T", " "); // minutes, as the store's clock wrote them

async function showGenome(id) {
  const genome = await api("/genomes/" + id);
  $("genome-name").textContent = genome.name;
  const facts = { id: genome.id, file: baseName(genome.file), length: grouped(genome.length) + " bp",
    GC: number(genome.gc, FRACTION), records: grouped(genome.n_records), windows: grouped(genome.n_chunks),
    added: when(genome.added_at), ...genome.labels };
  $("genome-facts").replaceChildren(...Object.entries(facts).flatMap(([key, value]) => {
    const dt = document.createElement("dt"); dt.textContent = key;
    const dd = document.createElement("dd"); dd.textContent = value;
    return [dt, dd];
  }));
  const whole = $("genome-fasta");
  whole.replaceChildren(...(genome.sequence_stored ? [fastaLink("the genome as FASTA", genome.id, {}, genome.name + ".fa")] : []));
  $("records").tBodies[0].replaceChildren(...genome.records.map((r) => {
    const row = document.createElement("tr");
    cell(row, r.idx + 1, true); cell(row, r.name); cell(row, r.description);
    cell(row, grouped(r.length), true); cell(row, number(r.gc, FRACTION), true); cell(row, grouped(r.n_count), true);
    cell(row, genome.sequence_stored ? fastaLink("FASTA", genome.id, { record: r.name }, `${genome.name}_${r.name}.fa`) : "");
    return row;
  }));
}

async function route() {
  const match = location.hash.match(/^#\/genomes\/(\d+)$/);
  $("search-view").hidden = Boolean(match);
  $("genome-view").hidden = !match;
  if (match) {
    try { await showGenome(match[1]); } catch (error) { $("genome-name").textContent = error.message; }
  }
}

$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  if (file) $("fasta").value = await file.text();
});
$("query-form").addEventListener("submit", search);
window.addEventListener("hashchange", route);
showStore().catch((error) => { $("store").textContent = error.message; });
route();
