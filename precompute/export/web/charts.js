// Two small SVG charts drawn by hand (a charting library would outweigh all the pages together): the t-SNE
// map of a neuron's exemplars, and box plots of diversity per layer.
import { el } from "./common.js";

export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const colour = (i) => PALETTE[i % PALETTE.length];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== null && value !== undefined) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

/** Points ({x, y, facet}) coloured by facet; `selected` facet stands out; hovering a point shows `tooltip(point)`,
 * clicking it or a legend entry calls `onPick(facet)`. */
export function scatter(points, { selected = null, onPick, tooltip, width = 640, height = 440 }) {
  const pad = 12;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (width - 2 * pad);
  const sy = (y) => height - pad - ((y - y0) / (y1 - y0 || 1)) * (height - 2 * pad);
  const tip = el("div", { class: "tooltip", hidden: true });
  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "scatter", role: "img", "aria-label": "t-SNE map of the exemplars" });
  for (const p of points) {
    const dot = svg("circle", { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: 4, fill: colour(p.facet),
      "fill-opacity": selected === null || selected === p.facet ? 0.9 : 0.08, "data-facet": p.facet });
    dot.addEventListener("mouseenter", () => {
      tip.replaceChildren(tooltip(p));
      tip.style.left = `${(100 * sx(p.x)) / width}%`;
      tip.style.top = `${(100 * sy(p.y)) / height}%`;
      tip.hidden = false;
    });
    dot.addEventListener("mouseleave", () => { tip.hidden = true; });
    dot.addEventListener("click", () => onPick(p.facet));
    plot.append(dot);
  }
  const facets = [...new Set(points.map((p) => p.facet))].sort((a, b) => a - b);
  const legend = el("div", { class: "legend" }, "facet ", facets.map((facet) => el("button", {
    type: "button", class: facet === selected ? "picked" : "", onclick: () => onPick(facet) },
    el("span", { class: "swatch", style: `background:${colour(facet)}` }), String(facet))));
  return el("div", { class: "chart" }, el("div", { class: "plot" }, plot, tip), legend);
}

/** Box plots (whiskers at min and max) of `groups` ({x, series, min, q1, median, q3, max, mark?}): one box per x
 * category and series; `mark` draws a black tick (a baseline); `log` uses a log scale clamped to `domain`. */
export function boxes(groups, { categories, series = [null], log = false, domain = [0, 1], title = "", width = 720, height = 300 }) {
  const [left, right, top, bottom] = [48, 8, 10, 34];
  const [lo, hi] = log ? domain.map(Math.log10) : domain;
  const clamp = (v) => Math.min(hi, Math.max(lo, log ? Math.log10(v) : v));
  const y = (v) => top + (1 - (clamp(v) - lo) / (hi - lo)) * (height - top - bottom);
  const band = (width - left - right) / categories.length;
  const boxWidth = Math.min(28, (band * 0.8) / series.length);
  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "boxes", role: "img", "aria-label": title });
  const ticks = log ? [0.01, 0.1, 1, 10, 100] : [0, 0.2, 0.4, 0.6, 0.8, 1].map((t) => lo + t * (hi - lo));
  for (const t of ticks) {
    plot.append(svg("line", { x1: left, x2: width - right, y1: y(t), y2: y(t), class: "grid" }),
      svg("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, String(+t.toFixed(2))));
  }
  plot.append(svg("text", { x: 12, y: height / 2, transform: `rotate(-90 12 ${height / 2})`, "text-anchor": "middle" }, title));
  categories.forEach((category, i) => {
    const middle = left + band * (i + 0.5);
    plot.append(svg("text", { x: middle, y: height - 12, "text-anchor": "middle" }, category));
    series.forEach((name, j) => {
      const g = groups.find((group) => group.x === category && (name === null || group.series === name));
      if (!g) return;
      const x = middle + (j - (series.length - 1) / 2) * boxWidth - boxWidth / 2;
      const fill = colour(name === null ? i : j);
      plot.append(svg("g", {},
        svg("title", {}, `${category}${name ? " · " + name : ""}: median ${g.median.toFixed(3)} (quartiles ${g.q1.toFixed(3)}–${g.q3.toFixed(3)}, ` +
          `min ${g.min.toFixed(3)}, max ${g.max.toFixed(3)}, ${g.n} neurons)` + (g.mark !== undefined && g.mark !== null ? `; baseline ${g.mark.toFixed(3)}` : "")),
        svg("line", { x1: x + boxWidth / 2, x2: x + boxWidth / 2, y1: y(g.min), y2: y(g.max), stroke: fill }),
        svg("rect", { x: x + 1, width: boxWidth - 2, y: y(g.q3), height: Math.max(1, y(g.q1) - y(g.q3)), fill, "fill-opacity": 0.75 }),
        svg("line", { x1: x + 1, x2: x + boxWidth - 1, y1: y(g.median), y2: y(g.median), stroke: "white", "stroke-width": 2 }),
        g.mark !== undefined && g.mark !== null
          ? svg("line", { x1: x - 2, x2: x + boxWidth + 2, y1: y(g.mark), y2: y(g.mark), stroke: "black", "stroke-width": 2 }) : ""));
    });
  });
  const legend = series[0] === null ? null : el("div", { class: "legend" },
    series.map((name, j) => el("span", {}, el("span", { class: "swatch", style: `background:${colour(j)}` }), name)));
  return el("div", { class: "chart" }, plot, legend);
}
