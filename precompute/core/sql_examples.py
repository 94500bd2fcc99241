"""Ready-made queries offered on the SQL pages, the dashboard's and the exported static site's (tested against
the demo store, in DuckDB and in the browser's DuckDB-WASM)."""

EXAMPLES = {
    "Most multifaceted neurons of each layer": """
SELECT layer, unit, label, facet_diversity, diversity_null, k
FROM (SELECT *, row_number() OVER (PARTITION BY layer ORDER BY facet_diversity DESC) AS rank
      FROM neurons JOIN runs USING (run_id)
      WHERE method = 'mfv' AND facet_diversity IS NOT NULL)
WHERE rank <= 3
ORDER BY layer, rank""",
    "Facets that failed to reach the target class": """
SELECT f.layer, f.unit, n.label, f.facet, f.act_init, f.act_final, f.target_prob, f.image_png
FROM facets f JOIN runs r USING (run_id) JOIN neurons n USING (run_id, layer, unit)
WHERE r.method = 'mfv' AND (f.top1_hit = false OR f.act_final <= f.act_init)
ORDER BY f.target_prob""",
    "What a conv unit saw where it fired (receptive-field crops)": """
SELECT e.image_id, e.activation, e.pos_y, e.pos_x, e.facet, e.crop_png
FROM exemplars e JOIN runs r USING (run_id)
WHERE r.method = 'mfv' AND e.layer = 'conv3' AND e.unit = 12 AND e.crop_png IS NOT NULL
ORDER BY e.activation DESC, e.image_id LIMIT 20""",
    "Facet diversity histogram": """
SELECT layer, round(facet_diversity, 1) AS diversity_bin, count(*) AS neurons
FROM neurons JOIN runs USING (run_id)
WHERE method = 'mfv' AND facet_diversity IS NOT NULL
GROUP BY ALL ORDER BY layer, diversity_bin""",
    "Dead units per layer": """
SELECT layer, count(*) FILTER (n.status = 'dead') AS dead, count(*) AS units
FROM neurons n JOIN runs r USING (run_id) WHERE r.method = 'mfv'
GROUP BY layer ORDER BY min(unit), layer""",
    "MFV facets next to the noise baseline (class neurons)": """
SELECT m.unit, n.label, m.facet, m.image_png AS mfv, b.image_png AS noise, m.act_final AS mfv_act, b.act_final AS noise_act
FROM facets m JOIN runs rm ON rm.run_id = m.run_id AND rm.method = 'mfv'
JOIN facets b ON b.layer = m.layer AND b.unit = m.unit
JOIN runs rb ON rb.run_id = b.run_id AND rb.method = 'noise'
JOIN neurons n ON n.run_id = m.run_id AND n.layer = m.layer AND n.unit = m.unit
WHERE m.layer = 'fc8' AND m.facet = 0 ORDER BY m.unit""",
    "Neurons whose MFV facets explain them as well as their exemplars": """
SELECT s.layer, s.unit, n.label, s.score AS facets_score, e.score AS exemplars_score, s.trials, n.facet_diversity
FROM scores s JOIN runs r ON r.run_id = s.run_id AND r.method = 'mfv'
JOIN scores e ON e.run_id = s.run_id AND e.layer = s.layer AND e.unit = s.unit
             AND e.method = 'exemplars' AND e.facet IS NULL
JOIN neurons n ON n.run_id = s.run_id AND n.layer = s.layer AND n.unit = s.unit
WHERE s.method = 'mfv' AND s.facet IS NULL AND s.score >= 0.9 AND s.score >= e.score - 0.05
ORDER BY n.facet_diversity DESC NULLS LAST""",
    "Multifaceted neurons whose facet images tell their facets apart": """
SELECT f.layer, f.unit, n.label, n.facet_diversity, f.score AS facet_score, e.score AS exemplars_score,
       f.score - e.score AS behind_exemplars, f.trials
FROM facet_scores f
JOIN facet_scores e ON e.run_id = f.run_id AND e.layer = f.layer AND e.unit = f.unit
                   AND e.method = 'exemplars' AND e.facet IS NULL
JOIN neurons n ON n.run_id = f.run_id AND n.layer = f.layer AND n.unit = f.unit
WHERE f.method = 'mfv' AND f.facet IS NULL AND n.facet_diversity >= 0.5
ORDER BY f.score DESC, f.layer, f.unit LIMIT 50""",
}
