// Layers: is a higher layer more multifaceted? Facet diversity per layer against its random-split baseline,
// the layer table; then the Evidence: the paper's claims with their verdicts and the methods compared.
import { boxes } from "./charts.js";
import { chooseRun, el, fetchJSON, keepState, message, pct, runParam, table } from "./common.js";

const BADGES = { "supported": "good", "partly supported": "partly", "not supported": "bad", "not measured": "none" };

export async function render(page, params, site, isCurrent) {
  const run = chooseRun(site, params);
  keepState("layers", { run: runParam(site, run) });
  const doc = await fetchJSON(run.layers_page);
  if (!isCurrent()) return;
  page.append(el("h1", { text: "Layers" }), el("p", { class: "caption", text: "The paper reports that neurons in higher layers are " +
    "more multifaceted. Here is this store's evidence: facet diversity per layer against its random-split baseline, and how often " +
    "synthesis reached its target." }));
  const order = doc.summary.map((row) => row.layer);
  if (doc.diversity.length) {
    page.append(boxes(doc.diversity.map((b) => ({ ...b, x: b.layer, mark: b.null })), { categories: order, title: "facet diversity" }),
      el("p", { class: "caption", text: "Boxes: facet diversity of each layer's neurons (whiskers: min and max). Black ticks: the median random-split baseline." }));
  }
  const share = (v) => (v === null ? "–" : pct(v));
  page.append(table(["layer", "kind", "units", "neurons", "dead", "failed", "median diversity", "median null",
    "facets that raised their activation", "facets that became top-1 (class layer)"],
  doc.summary.map((r) => [r.layer, r.kind, r.n_units, r.neurons, r.dead, r.failed, num(r.median_diversity), num(r.median_null),
    share(r.share_raised), share(r.share_top1)])));
  page.append(...evidence(doc.evidence));
}

const num = (v) => (v === null ? "–" : v.toFixed(3));

function evidence(ev) {
  const head = [el("h2", { text: "Evidence" }), el("p", { class: "caption", text: "Does this atlas reproduce the paper, and by how much does MFV " +
    "beat the baselines? Numbers from python -m precompute evaluate: each method's images measured against the neuron's real exemplars, " +
    "a second model and simple image statistics; each claim's verdict is computed from them." })];
  if (!ev) return [...head, message("info", "This store has no evaluations yet (python -m precompute evaluate --store DIR, then export again).")];
  const measures = [...new Set(ev.diversity.map((b) => b.measure))];
  return [...head,
    el("h3", { text: "The claims" }), ...claims(ev.claims),
    el("h3", { text: "Methods compared" }),
    el("p", { class: "caption", text: "Per-neuron values averaged over the run (image diversity: median). Distances are to the neuron's own " +
      "exemplars (lower: more like real images); centre share (0.25 = no preference) and fragments on fully connected layers." }),
    table(ev.methods.columns, ev.methods.rows),
    el("h3", { text: "Diversity per layer" }),
    el("p", { class: "caption", text: "Each neuron's facet diversity (MFV's clusters, as stored) and image diversity (the spread of its " +
      "synthesized images' fc7 codes ÷ the spread of its exemplars'), for MFV and the diversity baseline (log scale)." }),
    boxes(ev.diversity.map((b) => ({ ...b, x: b.layer, series: b.measure })), { categories: ev.layers, series: measures, log: true,
      domain: [0.01, 100], title: "diversity (log; 1 = as varied as its exemplars)", height: 340 }),
    ...(ev.effnet ? [el("h3", { text: "EfficientNet-Lite0 (data-free methods)" }),
      el("p", { class: "caption", text: "A few ImageNet class neurons of a real network, synthesized by the methods that need no images." }),
      table(ev.effnet.methods.columns, ev.effnet.methods.rows), ...claims(ev.effnet.claims, " (EfficientNet-Lite0)")] : [])];
}

const claims = (rows, suffix = "") => rows.map((c) => el("p", { class: "claim" },
  el("span", { class: `badge ${BADGES[c.verdict] || "none"}`, text: c.verdict }), " ", el("strong", { text: c.statement + suffix }),
  el("br"), `${c.evidence}.`));
