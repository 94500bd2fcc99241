// Neuron: the paper's figure. Each facet's image, its init (mean) image and the exemplars nearest its centre;
// the t-SNE map of the exemplars by facet; the other methods' results beside. Conv units are shown where they
// look (their receptive field), the full canvas one click away (?canvas=full). One JSON document per neuron.
import { scatter } from "./charts.js";
import { NotFound, chooseRun, el, fetchJSON, fmt, keepState, message, neuronHref, outlined, pct, picture, records,
  runParam, signedPct } from "./common.js";

export async function render(page, params, site, isCurrent) {
  const run = chooseRun(site, params);
  const names = run.layers.map((l) => l.layer);
  const layerName = params.get("layer") || names[names.length - 1];
  const layer = run.layers.find((l) => l.layer === layerName);
  const unit = params.has("unit") ? Number(params.get("unit")) : 0;
  page.append(picker(site, run, layer || run.layers[run.layers.length - 1], unit));
  if (!layer) return page.append(el("h1", { text: "Neuron" }), message("error", `Unknown layer “${layerName}”; this run has: ${names.join(", ")}.`));
  if (!Number.isInteger(unit) || unit < 0 || unit >= layer.n_units) {
    return page.append(el("h1", { text: "Neuron" }),
      message("error", `Unit ${params.get("unit")} is out of range for layer ${layer.layer}: valid units are 0..${layer.n_units - 1}.`));
  }
  let doc;
  try {
    doc = await fetchJSON(`${layer.documents}${unit}.json`);
  } catch (err) {
    if (!(err instanceof NotFound) || err.status !== 404) throw err;
    return page.append(el("h1", { text: `${layer.layer}/${unit}` }), message("info", "This neuron is not in the store (its layer or unit was not built)."));
  }
  if (!isCurrent()) return;
  const state = { facet: params.has("facet") ? Number(params.get("facet")) : null, full: params.get("canvas") === "full" };
  const body = el("div");
  const redraw = () => {
    keepState("neuron", { layer: layer.layer, unit, run: runParam(site, run), facet: state.facet, canvas: state.full ? "full" : null });
    body.replaceChildren(...[...facetsSection(doc, state, redraw), ...mapSection(doc, state, redraw)].filter(Boolean));
  };
  page.append(...[el("h1", { text: `${doc.neuron.label} · ${layer.layer}/${unit}` }), ...summary(doc), body, ...othersSection(doc)].filter(Boolean));
  redraw();
}

function picker(site, run, layer, unit) {
  const layerBox = el("select", { "aria-label": "Layer" }, run.layers.map((l) => el("option", { value: l.layer, selected: l === layer, text: l.layer })));
  const unitBox = el("input", { type: "number", min: 0, value: Number.isInteger(unit) ? unit : 0, class: "narrow", "aria-label": "Unit" });
  const go = (event) => {
    event.preventDefault();
    const chosen = run.layers.find((l) => l.layer === layerBox.value);
    location.hash = neuronHref(site, run, chosen.layer, Math.min(Math.max(0, parseInt(unitBox.value, 10) || 0), chosen.n_units - 1));
  };
  return el("form", { class: "controls", onsubmit: go }, el("label", {}, "Layer ", layerBox), el("label", {}, "Unit ", unitBox),
    el("button", { type: "submit" }, "Open"));
}

function summary(doc) {
  const n = doc.neuron;
  const own = doc.scores.find((s) => s.method !== "exemplars" && s.facet === null);
  const natural = doc.scores.find((s) => s.method === "exemplars" && s.facet === null);
  const told = doc.facet_scores.find((s) => s.method === "mfv" && s.facet === null);
  const real = doc.facet_scores.find((s) => s.method === "exemplars" && s.facet === null);
  const metric = (name, value, delta, help) => el("div", { class: "metric", title: help || null },
    el("span", { class: "name", text: name }), el("span", { class: "value", text: value }), delta ? el("span", { class: "delta", text: delta }) : null);
  const metrics = el("div", { class: "metrics" },
    metric("Facets (k)", fmt(n.k)), metric("Exemplars", fmt(n.n_exemplars)),
    metric("Facet diversity", fmt(n.facet_diversity), null, `Random-split baseline: ${fmt(n.diversity_null)}. Share of the exemplars' spread that lies between facets (0 to 1).`),
    metric("Best activation reached", fmt(n.best_act_final, 1)), metric("Top exemplar activation", fmt(n.max_activation, 1)),
    own && own.score !== null ? metric("Explanation score", pct(own.score), natural ? `${signedPct(own.score - natural.score)} vs exemplars` : null,
      `Share of ${own.trials} trials (a strongly and a weakly driving held-out image, ${own.heldout}) where the image more like these facets under ` +
      `${own.backbone} is the stronger one. 50% is chance.` + (natural ? ` The neuron's real exemplars score ${pct(natural.score)}.` : "")) : null,
    told && told.score !== null ? metric("Facet score", pct(told.score), real ? `${signedPct(told.score - real.score)} vs exemplars` : null,
      `Share of ${told.trials} trials (two strongly driving held-out images of different facets, ${told.heldout}) where a facet's image is more ` +
      `like the one of its own facet under ${told.backbone}. 50% is chance: one picture for every facet scores that.` +
      (real ? ` The exemplar nearest each facet's centre scores ${pct(real.score)}.` : "")) : null);
  return [metrics,
    n.top_class ? el("p", { class: "caption" }, "Exemplars are mostly ", el("strong", { text: n.top_class }), ` (${pct(n.top_class_share)}).`) : null,
    n.status !== "ok" ? message("warning", `This neuron is ${n.status}: ${n.reason}. MFV has no facets for it; the from-noise results below show what would turn it on.`) : null];
}

function facetsSection(doc, state, redraw) {
  if (!doc.facets.length) return [];
  const field = doc.field;
  const exemplars = records(doc.exemplars);
  const cropped = field && !state.full;
  const image = (whole, crop, size, alt) => (!field ? picture(whole, size, alt) : cropped ? picture(crop, size, alt)
    : outlined(whole, size, field.box, field.input, alt));
  const exemplar = (e) => (!field || e.box === null ? picture(e.thumb, 34, `exemplar ${e.image_id}`)
    : cropped && e.crop ? picture(e.crop, 34, `exemplar ${e.image_id}`) : outlined(e.thumb, 34, e.box, field.input, `exemplar ${e.image_id}`));
  const explains = Object.fromEntries(doc.scores.filter((s) => s.method !== "exemplars" && s.facet !== null).map((s) => [s.facet, s.score]));
  const told = Object.fromEntries(doc.facet_scores.filter((s) => s.method === "mfv" && s.facet !== null).map((s) => [s.facet, s.score]));
  const cards = doc.facets.map((f) => {
    const facts = [`act ${fmt(f.act_init, 1)} → `, el("strong", { text: fmt(f.act_final, 1) }),
      f.target_prob !== null ? ` · p=${f.target_prob.toFixed(2)}` : "", f.top1_hit === true ? " ✓ top-1" : f.top1_hit === false ? " ✗ not top-1" : "",
      f.facet in explains ? ` · explains ${pct(explains[f.facet])}` : "", f.facet in told ? ` · facet score ${pct(told[f.facet])}` : ""];
    return el("article", { class: `facet${state.facet === f.facet ? " picked" : ""}` },
      image(f.image, f.image_crop, 112, `facet ${f.facet}`),
      el("p", { class: "caption", text: `${state.facet === f.facet ? "▶ " : ""}facet ${f.facet} · ${f.size} images` }),
      image(f.init, f.init_crop, 56, `init of facet ${f.facet}`), el("p", { class: "caption", text: "init (mean image)" }),
      el("div", { class: "nearest" }, f.nearest.map((i) => exemplar(exemplars[i]))),
      el("p", { class: "caption" }, ...facts),
      el("button", { type: "button", onclick: () => { state.facet = state.facet === f.facet ? null : f.facet; redraw(); },
        title: "Highlight this facet's cluster on the map" }, state.facet === f.facet ? "Unhighlight" : "Highlight"));
  });
  const switcher = field ? el("div", { class: "switch", role: "radiogroup", "aria-label": "Show" }, "Show: ",
    [["receptive field", false], ["full image", true]].map(([name, full]) => el("button", { type: "button", role: "radio",
      "aria-checked": String(state.full === full), class: state.full === full ? "picked" : "",
      onclick: () => { state.full = full; redraw(); } }, name))) : null;
  const caption = "Top: the synthesized facet. Below it: its initialization (the mean of the exemplars nearest the cluster centre) " +
    "and the exemplars nearest the centre." + (field ? ` A unit of ${doc.layer} sees ${field.size[0]} x ${field.size[1]} pixels: ` +
    (cropped ? "shown is that receptive field, around the central position for facets and inits and around where the unit " +
      "fired most for exemplars." : "outlined in orange.") : "");
  return [el("h2", { text: "Facets" }), switcher, el("p", { class: "caption", text: caption }), el("div", { class: "facets" }, cards)];
}

function mapSection(doc, state, redraw) {
  const points = records(doc.exemplars).filter((e) => e.x !== null && e.y !== null);
  if (!points.length) return [];
  const tooltip = (p) => el("div", {}, p.thumb ? picture(p.thumb, 84, `exemplar ${p.image_id}`) : null,
    el("div", { text: `image ${p.image_id} · act ${fmt(p.activation)} · facet ${p.facet} · rank ${p.rank}` }));
  const pick = (facet) => { state.facet = state.facet === facet ? null : facet; redraw(); };
  return [el("h2", { text: "t-SNE map of the exemplars" }),
    el("p", { class: "caption", text: "Each point is one exemplar image, placed by t-SNE of its fc7 code, coloured by facet. Hover for the " +
      "image (kept for the exemplars nearest each centre) and activation; click a point or legend entry to highlight its facet." }),
    scatter(points, { selected: state.facet, onPick: pick, tooltip })];
}

function othersSection(doc) {
  if (!doc.others.length) return [];
  return [el("h2", { text: "Other methods and reruns" }),
    el("p", { class: "caption", text: "Plain activation maximization from noise, center-biased regularization, Lucid's diversity objective " +
      "(k images from noise pushed apart in style: MFV's data-free peer), and any reruns of this neuron, for comparison with the MFV facets above." }),
    ...doc.others.map((other) => el("section", { class: "other" }, el("p", {}, el("strong", { text: other.method }), " · ", el("code", { text: other.run })),
      el("div", { class: "row" }, other.images.map(([path, act]) => el("figure", {}, picture(path, 84, `${other.method} image`),
        el("figcaption", { text: `act ${fmt(act, 1)}` }))))))];
}
