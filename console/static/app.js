// clickagg dashboard: every number comes from the public API (/v1/...),
// the view lives in the URL, uPlot draws the charts. No build step.
(() => {
"use strict";

const REFRESH_MS = 5000;
const MEASURES = {
  impressions: { label: "impressions", fmt: "int" },
  clicks: { label: "clicks", fmt: "int" },
  conversions: { label: "conversions", fmt: "int" },
  spend: { label: "spend", fmt: "money", field: "spend_micros", scale: 1e-6 },
  ctr: { label: "CTR", fmt: "pct" },
  cvr: { label: "CVR", fmt: "pct" },
  ecpm: { label: "eCPM", fmt: "money" },
};
const FILTERS = ["country", "ad_format", "device", "campaign_id"];
// Parameters kept in the URL, with their defaults (defaults are left out).
const VIEW = { window: "1h", from: "", to: "", country: "", ad_format: "", device: "", campaign_id: "", measure: "clicks", ad: "", n: "20", mode: "exact" };

const $ = (sel) => document.querySelector(sel);
const el = (tag, props, ...kids) => {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const k of kids) e.append(k);
  return e;
};

const view = readView();
let paused = false;
let timer = 0;
let generation = 0; // drops answers of an older view
let refreshes = 0;
let lastIngest = null; // {at, status}
const ingestRate = { t: [], v: [] };
const charts = {};
let topSort = "";
let topRows = [];

// ---- the URL is the view ----------------------------------------------------

function readView() {
  const q = new URLSearchParams(location.search);
  const v = {};
  for (const [k, def] of Object.entries(VIEW)) v[k] = q.get(k) || def;
  if (!MEASURES[v.measure]) v.measure = VIEW.measure;
  return v;
}

function writeView() {
  const q = new URLSearchParams();
  for (const [k, def] of Object.entries(VIEW)) if (view[k] && view[k] !== def) q.set(k, view[k]);
  const s = q.toString();
  history.replaceState(null, "", s ? "?" + s : location.pathname);
}

function rangeParams() {
  return view.from && view.to ? { from: view.from, to: view.to } : { window: view.window };
}

function filterParams(skip) {
  const p = {};
  for (const f of FILTERS) if (view[f] && f !== skip) p[f] = view[f];
  return p;
}

// ---- the API, with the token when the server wants one -------------------------

class HTTPError extends Error {
  constructor(status, body) {
    super((body && body.error) || "HTTP " + status);
    this.status = status;
    this.body = body;
  }
}

async function api(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem("clickagg-token");
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(path + (q ? "?" + q : ""), { headers, cache: "no-store" });
  let body = null;
  try { body = await res.json(); } catch (e) { /* a non-JSON answer */ }
  if (res.status === 401) {
    sessionStorage.removeItem("clickagg-token");
    askToken(token ? "The token was refused." : "");
  }
  if (!res.ok) throw new HTTPError(res.status, body);
  return body;
}

function askToken(why) {
  const d = $("#token-dialog");
  if (d.open) return;
  pause(true);
  d.querySelector("p").textContent = (why ? why + " " : "") + "This server wants a query token.";
  d.showModal();
}

// ---- formatting ---------------------------------------------------------------

const intFmt = new Intl.NumberFormat("en-US");
const moneyFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const pctFmt = new Intl.NumberFormat("en-US", { style: "percent", minimumFractionDigits: 2, maximumFractionDigits: 2 });

function measureOf(row, m) {
  const d = MEASURES[m];
  const v = row[d.field || m];
  return v == null ? null : v * (d.scale || 1);
}

function format(m, v) {
  if (v == null || Number.isNaN(v)) return "–";
  switch (MEASURES[m].fmt) {
    case "int": return intFmt.format(v);
    case "money": return moneyFmt.format(v);
    case "pct": return pctFmt.format(v);
  }
  return String(v);
}

function timeLabel(iso) {
  return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
}

// ---- panels -----------------------------------------------------------------------

async function headline(gen) {
  const p = { ...rangeParams(), ...filterParams() };
  const now = await api("/v1/metrics", p);
  const from = Date.parse(now.from), to = Date.parse(now.to);
  const prev = await api("/v1/metrics", {
    ...filterParams(),
    from: new Date(from - (to - from)).toISOString().replace(".000", ""),
    to: now.from,
  });
  if (gen !== generation) return null;
  const cur = now.rows[0] || {}, before = prev.rows[0] || {};
  const box = $("#headline");
  box.replaceChildren();
  for (const m of Object.keys(MEASURES)) {
    const v = measureOf(cur, m), b = measureOf(before, m);
    const delta = el("div", { className: "delta" });
    if (v != null && b) {
      const r = (v - b) / b;
      delta.textContent = (r > 9 ? "×" + (v / b).toFixed(0) : (r >= 0 ? "+" : "") + pctFmt.format(r)) + " vs previous";
      delta.classList.add(r > 0 ? "up" : r < 0 ? "down" : "same");
    } else {
      delta.textContent = "no previous data";
    }
    const card = el("button", { className: "card" + (m === view.measure ? " selected" : ""), type: "button", id: "h-" + m },
      el("div", { className: "label", textContent: MEASURES[m].label }),
      el("div", { className: "value", textContent: format(m, v) }),
      delta);
    card.dataset.value = v == null ? "" : String(v);
    card.dataset.raw = cur[MEASURES[m].field || m] == null ? "" : String(cur[MEASURES[m].field || m]);
    card.dataset.measure = m;
    card.addEventListener("click", () => set({ measure: m }));
    box.append(card);
  }
  $("#range-line").textContent = "From " + timeLabel(now.from) + " to " + timeLabel(now.to) + " UTC" +
    (view.from ? "" : " (last " + view.window + ", refreshed every " + REFRESH_MS / 1000 + " s)") +
    (Object.keys(filterParams()).length ? " · filtered" : "");
  return now;
}

function granularity(r) {
  const span = Date.parse(r.to) - Date.parse(r.from);
  if (span <= 24 * 3600e3) return ["minute", "1m", 60];
  if (span <= 7 * 24 * 3600e3) return ["hour", "1h", 3600];
  return ["day", "1d", 86400];
}

// dense fills the buckets ClickHouse has no row for: zero for counts, a gap
// for ratios (nothing to divide).
function dense(r, step, rows, timeKey, m) {
  const byT = new Map(rows.map((x) => [Date.parse(x[timeKey]) / 1000, x]));
  const xs = [], ys = [];
  const ratio = MEASURES[m].fmt === "pct" || m === "ecpm";
  for (let t = Date.parse(r.from) / 1000; t < Date.parse(r.to) / 1000; t += step) {
    xs.push(t);
    const row = byT.get(t);
    ys.push(row ? measureOf(row, m) : ratio ? null : 0);
  }
  return [xs, ys];
}

function draw(key, target, data, series, opts) {
  const box = $(target);
  const width = Math.max(box.clientWidth, 300);
  const height = (opts && opts.height) || 240;
  if (charts[key] && charts[key].sig === series.map((s) => s.label).join()) {
    charts[key].setData(data);
    charts[key].setSize({ width, height });
    return;
  }
  if (charts[key]) charts[key].destroy();
  box.replaceChildren();
  charts[key] = new uPlot({
    width, height,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"), // the API's times are UTC
    scales: (opts && opts.scales) || { x: { time: true } },
    axes: (opts && opts.axes) || undefined,
    series: [(opts && opts.x) || {}, ...series],
    legend: { live: true },
  }, data, box);
  charts[key].sig = series.map((s) => s.label).join();
}

async function series(gen, r) {
  const [dim, , step] = granularity(r);
  const res = await api("/v1/metrics", { ...rangeParams(), ...filterParams(), group_by: dim });
  if (gen !== generation) return;
  const m = view.measure;
  $("#series-title").textContent = MEASURES[m].label + " per " + dim;
  draw("series", "#series-chart", dense(res, step, res.rows, dim, m),
    [{ label: MEASURES[m].label, stroke: "#2f6fde", fill: "rgba(47,111,222,.08)", width: 1.5,
      value: (u, v) => format(m, v) }]);
  const chart = $("#series-chart");
  chart.dataset.points = String(res.rows.length);
  chart.dataset.total = String(res.rows.reduce((s, x) => s + (measureOf(x, m) || 0), 0));
}

async function adSeries(gen, r) {
  const panel = $("#ad-panel");
  if (!view.ad) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const [, g, step] = granularity(r);
  const res = await api("/v1/ads/" + encodeURIComponent(view.ad) + "/series",
    { ...rangeParams(), ...filterParams("ad_id"), granularity: g });
  if (gen !== generation) return;
  const m = view.measure;
  $("#ad-title").textContent = view.ad + ": " + MEASURES[m].label + " per " + g;
  draw("ad", "#ad-chart", dense(res, step, res.points, "time", m),
    [{ label: view.ad, stroke: "#e0782f", fill: "rgba(224,120,47,.08)", width: 1.5, value: (u, v) => format(m, v) }]);
  $("#ad-chart").dataset.ad = view.ad;
  $("#ad-chart").dataset.total = String(res.points.reduce((s, p) => s + (measureOf(p, m) || 0), 0));
}

// Ranked by the API on the count measures; the ratios sort the rows shown.
async function topAds(gen) {
  const metric = { impressions: "impressions", clicks: "clicks", conversions: "conversions", spend: "spend_micros" }[view.measure] || "clicks";
  const filtered = Object.keys(filterParams()).length > 0;
  let mode = view.mode;
  let note = "";
  if (mode === "approx" && (filtered || metric === "spend_micros")) {
    mode = "exact";
    note = "Approximate top ads need no filters and a count measure: showing exact.";
  }
  const res = await api("/v1/ads/top", { ...rangeParams(), ...filterParams(), n: view.n, metric, mode });
  if (gen !== generation) return;
  if (res.mode !== view.mode && !note) note = "This server answered " + res.mode + ".";
  $("#top-note").textContent = note || (res.sketches ? "Approximate: candidates from the topK sketches." : "");
  topRows = res.ads;
  topSort = MEASURES[view.measure].fmt === "pct" || view.measure === "ecpm" ? view.measure : "";
  renderTop(metric === "spend_micros" ? "spend" : metric);
}

function renderTop(rankedBy) {
  const rows = topSort ? [...topRows].sort((a, b) => (measureOf(b, topSort) || 0) - (measureOf(a, topSort) || 0)) : topRows;
  for (const th of document.querySelectorAll("#top th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === (topSort || rankedBy));
  }
  const body = $("#top tbody");
  body.replaceChildren();
  rows.forEach((a, i) => {
    const tr = el("tr", { className: a.ad_id === view.ad ? "picked" : "" },
      el("td", { textContent: String(a.rank || i + 1) }),
      el("td", { className: "ad", textContent: a.ad_id }));
    for (const m of Object.keys(MEASURES)) tr.append(el("td", { className: "num", textContent: format(m, measureOf(a, m)) }));
    tr.dataset.ad = a.ad_id;
    tr.dataset.clicks = String(a.clicks);
    tr.addEventListener("click", () => set({ ad: a.ad_id }));
    body.append(tr);
  });
}

async function ingest(gen) {
  const st = await api("/v1/ingest/status");
  const cache = await api("/v1/cache/stats").catch(() => null);
  if (gen !== generation) return;
  const now = performance.now();
  const c = st.collector;
  if (lastIngest) {
    const dt = (now - lastIngest.at) / 1000;
    const rate = Math.max(0, (c.accepted - lastIngest.status.collector.accepted) / dt);
    ingestRate.t.push(Date.now() / 1000);
    ingestRate.v.push(rate);
    if (ingestRate.t.length > 120) { ingestRate.t.shift(); ingestRate.v.shift(); }
  }
  lastIngest = { at: now, status: st };
  const rate = ingestRate.v.length ? ingestRate.v[ingestRate.v.length - 1] : null;
  const facts = [
    ["accepted", intFmt.format(c.accepted) + (rate == null ? "" : " (" + intFmt.format(Math.round(rate)) + "/s)")],
    ["duplicates", intFmt.format(c.duplicates)],
    ["rejected (to dead_letters)", intFmt.format(c.rejected)],
    ["dead letters lost", intFmt.format(c.dead_letters_lost)],
    ["shed (429/503)", intFmt.format(c.shed)],
    ["committed rows", intFmt.format(st.ingestor.committed_rows)],
    ["buffered rows", intFmt.format(st.ingestor.buffered_rows)],
  ];
  if (st.kafka && st.kafka.enabled) {
    facts.push(["Kafka lag (rows)", intFmt.format(st.kafka.drain.pending_rows)]);
    facts.push(["Kafka drained", intFmt.format(st.kafka.drain.drained_rows)]);
  } else {
    facts.push(["Kafka", "off"]);
  }
  renderFacts("#ingest-facts", facts);
  $("#ingest-facts").dataset.accepted = String(c.accepted);
  $("#ingest-facts").dataset.rejected = String(c.rejected);
  const body = $("#rejected tbody");
  body.replaceChildren();
  const reasons = Object.entries(c.rejected_by_reason || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  for (const [reason, n] of reasons) {
    const tr = el("tr", {}, el("td", { textContent: reason.replace(/_/g, " ") }), el("td", { className: "num", textContent: intFmt.format(n) }));
    tr.dataset.reason = reason;
    body.append(tr);
  }
  if (!reasons.length) body.append(el("tr", {}, el("td", { textContent: "none" }), el("td")));
  if (ingestRate.t.length > 1) {
    draw("ingest", "#ingest-chart", [ingestRate.t, ingestRate.v],
      [{ label: "accepted events/s", stroke: "#1a8f4c", width: 1.5, value: (u, v) => v == null ? "–" : intFmt.format(Math.round(v)) }],
      {
        height: 180,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.15, 1)] } },
        axes: [{ values: (u, vs) => vs.map((v) => new Date(v * 1e3).toISOString().slice(11, 19)) }, {}],
      });
  }
  if (cache) {
    renderFacts("#cache-facts", [
      ["hit ratio", pctFmt.format(cache.hit_ratio || 0)],
      ["hits / misses", intFmt.format(cache.hits) + " / " + intFmt.format(cache.misses)],
      ["Redis errors", intFmt.format(cache.errors)],
    ]);
    $("#cache-facts").dataset.hitRatio = String(cache.hit_ratio || 0);
  }
}

function renderFacts(target, facts) {
  const dl = $(target);
  dl.replaceChildren();
  for (const [k, v] of facts) dl.append(el("dt", { textContent: k }), el("dd", { textContent: v }));
}

// The seeds' comparison: the same one-cell question from ClickHouse and from
// Redis, percentiles and the whole latency distribution (sorted samples).
async function benchmark() {
  const btn = $("#bench-run");
  const country = view.country || "US", format = view.ad_format || "banner";
  btn.disabled = true;
  $("#bench-note").textContent = "Running " + country + "/" + format + "…";
  try {
    const p = { ...rangeParams(), n: "50" };
    for (const f of ["device", "campaign_id"]) if (view[f]) p[f] = view[f];
    const r = await api("/v1/benchmark/" + encodeURIComponent(country) + "/" + encodeURIComponent(format), p);
    $("#bench-note").textContent = country + "/" + format + ", " + r.samples + " runs each way: Redis " +
      (r.speedup_p50 ? r.speedup_p50.toFixed(1) + "x faster at p50" : "not faster") +
      " (" + r.redis_hits + "/" + r.samples + " answered by Redis; timed in the server, without HTTP).";
    const tb = $("#bench-table tbody");
    tb.replaceChildren();
    for (const [name, l] of [["ClickHouse", r.clickhouse], ["Redis", r.redis]]) {
      const tr = el("tr", {}, el("th", { textContent: name }));
      for (const k of ["p50_ms", "p95_ms", "p99_ms", "mean_ms"]) tr.append(el("td", { className: "num", textContent: l[k].toFixed(2) }));
      tr.dataset.way = name.toLowerCase();
      tr.dataset.p50 = String(l.p50_ms);
      tb.append(tr);
    }
    $("#bench-table").hidden = false;
    const ch = r.clickhouse.samples_ms || [], rd = r.redis.samples_ms || [];
    const n = Math.max(ch.length, rd.length);
    if (n) {
      const xs = [], a = [], b = [];
      for (let i = 0; i < n; i++) {
        xs.push((100 * (i + 1)) / n);
        a.push(ch[Math.floor((i * ch.length) / n)] ?? null);
        b.push(rd[Math.floor((i * rd.length) / n)] ?? null);
      }
      draw("bench", "#bench-chart", [xs, a, b], [
        { label: "ClickHouse ms", stroke: "#e0782f", width: 2, value: (u, v) => v == null ? "–" : v.toFixed(2) },
        { label: "Redis ms", stroke: "#2f6fde", width: 2, value: (u, v) => v == null ? "–" : v.toFixed(2) },
      ], {
        height: 200,
        scales: { x: { time: false }, y: { distr: 3, log: 10 } },
        x: { label: "percentile", value: (u, v) => v == null ? "–" : "p" + v.toFixed(0) },
        axes: [{ values: (u, vs) => vs.map((v) => "p" + v) }, { label: "ms (log scale)" }],
      });
    }
    $("#cache-panel").dataset.ran = "true";
  } catch (e) {
    $("#bench-note").textContent = "Benchmark failed: " + e.message;
  } finally {
    btn.disabled = false;
  }
}

// ---- filters ------------------------------------------------------------------------

// The filters' choices: enums from the API's own document, countries from the
// data of the range.
async function fillChoices() {
  const spec = await api("/openapi.json");
  const enumOf = (name) => ((spec.components.schemas[name] || {}).enum || []).filter((v) => v !== "unknown");
  fillSelect("#f-ad_format", enumOf("AdFormatValue").length ? enumOf("AdFormatValue") : enumOf("AdFormat"));
  fillSelect("#f-device", enumOf("DeviceValue").length ? enumOf("DeviceValue") : enumOf("Device"));
}

// The list changes slowly: asked again when the view changes or a minute
// has passed, not on every refresh.
let countriesFor = "", countriesAt = 0;

async function fillCountries(gen) {
  const p = { ...rangeParams(), ...filterParams("country"), group_by: "country" };
  const key = new URLSearchParams(p).toString();
  if (key === countriesFor && Date.now() - countriesAt < 60e3) return;
  const res = await api("/v1/metrics", p);
  if (gen !== generation) return;
  const list = res.rows.sort((a, b) => b.impressions - a.impressions).map((r) => r.country);
  if (view.country && !list.includes(view.country)) list.push(view.country);
  fillSelect("#f-country", list);
  countriesFor = key;
  countriesAt = Date.now();
}

function fillSelect(sel, values) {
  const s = $(sel);
  const keep = s.value;
  s.replaceChildren(el("option", { value: "", textContent: "all" }));
  for (const v of values) s.append(el("option", { value: v, textContent: v }));
  s.value = keep;
}

function syncControls() {
  for (const k of ["window", "country", "ad_format", "device", "campaign_id", "measure", "n", "mode"]) {
    const c = $("#f-" + k);
    if (c.tagName === "SELECT" && view[k] && ![...c.options].some((o) => o.value === view[k])) {
      c.append(el("option", { value: view[k], textContent: view[k] }));
    }
    c.value = view[k];
  }
  $("#f-window").disabled = !!view.from;
}

function set(changes) {
  Object.assign(view, changes);
  writeView();
  syncControls();
  refresh();
}

// ---- refresh loop ------------------------------------------------------------------------

function showStatus(text, error) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

async function refresh() {
  clearTimeout(timer);
  const gen = ++generation;
  document.body.dataset.state = "loading";
  try {
    const r = await headline(gen);
    if (!r) return;
    await Promise.all([series(gen, r), adSeries(gen, r), topAds(gen), ingest(gen), fillCountries(gen)]);
    if (gen !== generation) return;
    refreshes++;
    document.body.dataset.state = "ready";
    document.body.dataset.refreshes = String(refreshes);
    showStatus((paused ? "paused · " : "") + "updated " + new Date().toLocaleTimeString());
  } catch (e) {
    if (gen !== generation) return;
    document.body.dataset.state = "error";
    const field = e.body && e.body.field ? " (" + e.body.field + ")" : "";
    showStatus(e.message + field, true);
  } finally {
    if (gen === generation && !paused) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function pause(on) {
  paused = on;
  $("#pause").setAttribute("aria-pressed", String(on));
  $("#pause").textContent = on ? "Resume" : "Pause";
  if (on) clearTimeout(timer);
  else refresh();
}

function wire() {
  for (const k of ["window", "country", "ad_format", "device", "measure", "n", "mode"]) {
    $("#f-" + k).addEventListener("change", (e) => set({ [k]: e.target.value }));
  }
  $("#f-campaign_id").addEventListener("change", (e) => {
    if (e.target.checkValidity()) set({ campaign_id: e.target.value.trim() });
  });
  $("#pause").addEventListener("click", () => pause(!paused));
  $("#ad-close").addEventListener("click", () => set({ ad: "" }));
  $("#bench-run").addEventListener("click", benchmark);
  for (const th of document.querySelectorAll("#top th[data-sort]")) {
    th.addEventListener("click", () => set({ measure: th.dataset.sort }));
  }
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("clickagg-token", $("#token-input").value.trim());
    $("#token-input").value = "";
    $("#token-dialog").close();
    fillChoices().catch(() => {});
    pause(false);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !paused) refresh();
  });
  window.addEventListener("resize", () => {
    for (const c of Object.values(charts)) c.setSize({ width: Math.max(c.root.parentElement.clientWidth, 300), height: c.height });
  });
}

wire();
syncControls();
fillChoices().catch(() => {}).finally(refresh);
})();
