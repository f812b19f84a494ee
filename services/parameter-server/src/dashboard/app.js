// The rwp dashboard: a read-only view of the server's JSON API (/api).
// Everything shown is set as text (never parsed as HTML): job names,
// labels and log messages come from users.
"use strict";

const main = document.getElementById("main");
const status = document.getElementById("status");
let timer = null;

// The bearer token: given once in the address (#/jobs?token=...), kept for
// the tab's session, never sent anywhere but this server's /api.
function token() {
  return sessionStorage.getItem("rwp-token") || "";
}

function takeTokenFromAddress() {
  const [path, query] = location.hash.split("?");
  if (!query) return;
  const params = new URLSearchParams(query);
  if (params.has("token")) {
    sessionStorage.setItem("rwp-token", params.get("token"));
    history.replaceState(null, "", location.pathname + path);
  }
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const response = await fetch("/api" + path, { headers, cache: "no-store" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new ApiError(response.status, body.error || response.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fixed = (x, digits = 4) => (x === null || x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits));

function age(unixMs) {
  const s = Math.max(0, (Date.now() - unixMs) / 1000);
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}

function time(unixMs) {
  return new Date(unixMs).toISOString().replace("T", " ").replace("Z", "");
}

function stateBadge(state) {
  return el("span", { class: `state ${state}`, "data-state": state }, state);
}

function progress(job) {
  return el("span", {},
    el("progress", { max: Math.max(job.total_updates, 1), value: job.step }),
    ` ${job.step}/${job.total_updates}`);
}

function show(...nodes) {
  main.replaceChildren(...nodes.filter((node) => node !== null && node !== undefined));
}

function showError(error) {
  if (error instanceof ApiError && error.status === 401) {
    const input = el("input", { type: "password", placeholder: "token (rwp-server token new)", autocomplete: "off" });
    const form = el("form", { class: "token" }, el("p", {}, error.message), input, " ", el("button", { type: "submit" }, "Use token"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem("rwp-token", input.value.trim());
      route();
    });
    show(el("h1", {}, "This server needs a token"), form);
    return;
  }
  show(el("div", { class: "error", "data-test": "error" }, error.message));
}

function poll(refresh, ms) {
  clearInterval(timer);
  const tick = async () => {
    try {
      await refresh();
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      clearInterval(timer);
      showError(error);
    }
  };
  tick();
  timer = setInterval(tick, ms);
}

// Jobs: state and progress of every job the token may see.
function jobsPage() {
  poll(async () => {
    const jobs = await api("/jobs");
    const rows = jobs.map((job) => el("tr", { "data-job-id": job.id },
      el("td", {}, el("a", { href: `#/jobs/${job.id}` }, job.id)),
      el("td", {}, job.name || "-"),
      el("td", {}, stateBadge(job.state)),
      el("td", {}, progress(job)),
      el("td", {}, `${job.spec.method}, ${job.spec.model} on ${job.spec.dataset}`),
      el("td", { class: "num" }, fixed(job.last_step && job.last_step.loss)),
      el("td", { class: "num" }, fixed(job.last_evaluation && job.last_evaluation.test_accuracy)),
      el("td", {}, Object.entries(job.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "-"),
      el("td", { class: "num" }, age(job.created_unix_ms)),
    ));
    show(
      el("h1", {}, `Jobs (${jobs.length})`),
      jobs.length === 0 ? el("p", { class: "muted" }, "No jobs yet: rwp submit --method m-arwp ...") :
        el("table", { "data-test": "jobs" },
          el("thead", {}, el("tr", {}, ["Job", "Name", "State", "Progress", "Method", "Loss", "Test acc", "Labels", "Age"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows)));
  }, 2000);
}

// An SVG line chart of one or more series of [x, y] points.
function chart(title, series, testName) {
  const width = 600, height = 220, pad = 36;
  const points = series.flatMap((s) => s.points);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("data-test", testName);
  svg.setAttribute("data-points", String(points.length));
  const box = el("div", { class: "chart" }, el("strong", {}, title), " ",
    el("span", { class: "legend" }, series.map((s, i) => el("span", { class: `s${i}` }, `— ${s.name}`))), svg);
  if (points.length === 0) {
    const text = document.createElementNS(svg.namespaceURI, "text");
    text.setAttribute("x", "20"); text.setAttribute("y", "40");
    text.textContent = "no data yet";
    svg.append(text);
    return box;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]).filter(Number.isFinite);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys, Math.min(...ys) + 1e-9)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0)) * (width - 2 * pad);
  const sy = (y) => height - pad + ((y0 - y) / (y1 - y0)) * (height - 2 * pad);
  const colors = ["#2563eb", "#dc2626", "#16a34a"];
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(svg.namespaceURI, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#9ca3af" });
  add("line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#9ca3af" });
  add("text", { x: 2, y: pad, "font-size": 10 }, y1.toPrecision(3));
  add("text", { x: 2, y: height - pad, "font-size": 10 }, y0.toPrecision(3));
  add("text", { x: pad, y: height - 8, "font-size": 10 }, `step ${x0}`);
  add("text", { x: width - pad - 40, y: height - 8, "font-size": 10 }, `step ${x1}`);
  series.forEach((s, i) => {
    const good = s.points.filter((p) => Number.isFinite(p[1]));
    if (good.length === 0) return;
    add("polyline", {
      fill: "none", stroke: colors[i % colors.length], "stroke-width": 1.5,
      points: good.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
      "data-series": s.name,
    });
  });
  return box;
}

function flatten(prefix, value, rows) {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(prefix ? `${prefix}.${k}` : k, v, rows);
  } else if (value !== null && value !== undefined) {
    rows.push([prefix, Array.isArray(value) ? value.join(", ") : String(value)]);
  }
  return rows;
}

// A job: live curves, its log and its settings.
function jobPage(id) {
  const steps = [], evaluations = [], log = [];
  poll(async () => {
    const job = await api(`/jobs/${encodeURIComponent(id)}`);
    const after = steps.length ? steps[steps.length - 1].step : 0;
    const metrics = await api(`/jobs/${encodeURIComponent(id)}/metrics?after=${after}`);
    for (const m of metrics.steps) if (!steps.length || m.step > steps[steps.length - 1].step) steps.push(m);
    for (const e of metrics.evaluations) if (!evaluations.some((x) => x.step === e.step)) evaluations.push(e);
    const afterSeq = log.length ? log[log.length - 1].seq : 0;
    for (const entry of await api(`/jobs/${encodeURIComponent(id)}/log?after=${afterSeq}`)) log.push(entry);

    const loss = chart("Training loss", [
      { name: "train loss", points: steps.filter((m) => !m.skipped).map((m) => [m.step, m.loss]) },
      { name: "perturbed loss", points: steps.filter((m) => m.perturbed_loss !== null && m.perturbed_loss !== undefined).map((m) => [m.step, m.perturbed_loss]) },
    ], "loss-chart");
    const accuracy = chart("Accuracy", [
      { name: "test", points: evaluations.map((e) => [e.step, e.test_accuracy]) },
      { name: "validation", points: evaluations.filter((e) => e.validation_accuracy !== null && e.validation_accuracy !== undefined).map((e) => [e.step, e.validation_accuracy]) },
      { name: "train (batch)", points: steps.filter((m) => !m.skipped).map((m) => [m.step, m.accuracy]) },
    ], "accuracy-chart");
    const last = evaluations[evaluations.length - 1];
    const logBox = el("div", { class: "log", "data-test": "log" },
      log.slice(-400).map((e) => el("div", { "data-kind": e.kind },
        el("span", { class: "muted" }, time(e.unix_ms)), "  ", el("span", { class: "kind" }, e.kind), e.message)));
    const settings = el("table", { "data-test": "settings" },
      el("tbody", {}, flatten("", job.spec, []).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
    show(
      el("h1", {}, job.name ? `${job.name} ` : "", el("span", { class: "muted" }, job.id), " ", stateBadge(job.state)),
      el("p", { "data-test": "progress" }, progress(job),
        ` updates, ${job.updates_per_epoch} per epoch`,
        job.last_step ? `, loss ${fixed(job.last_step.loss)}` : "",
        last ? `, test accuracy ${fixed(last.test_accuracy)} at step ${last.step}` : ""),
      job.waiting ? el("div", { class: "notice", "data-test": "waiting" }, `Waiting: ${job.waiting}`) : null,
      job.error ? el("div", { class: job.state === "paused" ? "notice" : "error" }, job.error) : null,
      el("div", { class: "charts" }, loss, accuracy),
      el("div", { class: "two" },
        el("div", {}, el("h2", {}, "Settings"), settings),
        el("div", {}, el("h2", {}, `Log (${log.length} entries)`), logBox)));
    logBox.scrollTop = logBox.scrollHeight;
  }, 1000);
}

function workersPage() {
  poll(async () => {
    const workers = await api("/workers");
    show(
      el("h1", {}, `Workers (${workers.filter((w) => w.connected).length} connected)`),
      workers.length === 0 ? el("p", { class: "muted" }, "No worker has registered: rwp-worker --server URL") :
        el("table", { "data-test": "workers" },
          el("thead", {}, el("tr", {}, ["Name", "Id", "Device", "State", "Job", "Task", "Done", "Last seen"].map((h) => el("th", {}, h)))),
          el("tbody", {}, workers.map((w) => el("tr", { "data-worker": w.name },
            el("td", {}, w.name || "-"), el("td", {}, w.id), el("td", {}, w.device),
            el("td", {}, w.connected ? "connected" : "lost"),
            el("td", {}, w.job ? el("a", { href: `#/jobs/${w.job}` }, w.job) : "-"),
            el("td", {}, w.task || (w.connected ? "idle" : "-")),
            el("td", { class: "num" }, w.tasks_done),
            el("td", { class: "num" }, `${age(w.last_seen_unix_ms)} ago`))))));
  }, 2000);
}

function sweepsPage() {
  poll(async () => {
    const sweeps = await api("/sweeps");
    show(
      el("h1", {}, `Sweeps (${sweeps.length})`),
      sweeps.length === 0 ? el("p", { class: "muted" }, "No sweeps yet: rwp sweep submit SWEEP.toml") :
        el("table", { "data-test": "sweeps" },
          el("thead", {}, el("tr", {}, ["Sweep", "Name", "State", "Searched", "Trials", "Best val acc"].map((h) => el("th", {}, h)))),
          el("tbody", {}, sweeps.map((s) => {
            const best = s.best_trial === null ? null : s.trials[s.best_trial];
            return el("tr", {},
              el("td", {}, el("a", { href: `#/sweeps/${s.id}` }, s.id)), el("td", {}, s.name || "-"),
              el("td", {}, stateBadge(s.state)), el("td", {}, s.fields.join(", ")),
              el("td", { class: "num" }, s.trials.length),
              el("td", { class: "num" }, fixed(best && best.job && best.job.validation_accuracy)));
          }))));
  }, 2000);
}

// A sweep's results table: trials by validation accuracy.
function sweepPage(id) {
  poll(async () => {
    const s = await api(`/sweeps/${encodeURIComponent(id)}`);
    const score = (t) => (t.job && Number.isFinite(t.job.validation_accuracy) ? t.job.validation_accuracy : -1);
    const trials = [...s.trials].sort((a, b) => score(b) - score(a));
    show(
      el("h1", {}, s.name ? `${s.name} ` : "", el("span", { class: "muted" }, s.id), " ", stateBadge(s.state)),
      s.error ? el("div", { class: "error" }, s.error) : null,
      el("table", { "data-test": "trials" },
        el("thead", {}, el("tr", {}, ["Trial", ...s.fields, "Job", "State", "Progress", "Val acc", "Test acc"].map((h) => el("th", {}, h)))),
        el("tbody", {}, trials.map((t) => el("tr", { class: t.index === s.best_trial ? "best" : undefined },
          el("td", {}, t.index === s.best_trial ? `${t.index} (best)` : t.index),
          s.fields.map((f) => el("td", { class: "num" }, String(t.params[f]))),
          el("td", {}, t.job ? el("a", { href: `#/jobs/${t.job.id}` }, t.job.id) : "waiting"),
          el("td", {}, t.job ? stateBadge(t.job.state) : "-"),
          el("td", {}, t.job ? `${t.job.step}/${t.job.total_updates}` : "-"),
          el("td", { class: "num" }, fixed(t.job && t.job.validation_accuracy)),
          el("td", { class: "num" }, fixed(t.job && t.job.test_accuracy)))))));
  }, 2000);
}

function route() {
  takeTokenFromAddress();
  const path = (location.hash.replace(/^#/, "").split("?")[0] || "/jobs").split("/").filter(Boolean);
  if (path[0] === "jobs" && path[1]) jobPage(decodeURIComponent(path[1]));
  else if (path[0] === "workers") workersPage();
  else if (path[0] === "sweeps" && path[1]) sweepPage(decodeURIComponent(path[1]));
  else if (path[0] === "sweeps") sweepsPage();
  else jobsPage();
}

window.addEventListener("hashchange", route);
route();
