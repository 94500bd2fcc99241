"""The synthesis methods and image parameterizations, by name: one table that the build, the
evidence report and the dashboard all read (torch-free, so the hosted dashboard can too)."""

METHODS = {   # name (runs.method) -> (short name in evidence tables, what it is)
    "mfv": ("MFV", "MFV (facets from exemplar clusters)"),
    "center-bias": ("center-bias", "Center-biased regularization"),
    "noise": ("noise", "From noise (baseline)"),
    "diversity": ("diversity (Lucid)", "Diversity (k images from noise, pushed apart)"),
}
DATA_FREE = ("center-bias", "noise", "diversity")   # methods that read no training images
PARAMETERIZATIONS = ("pixel", "fourier", "maco")     # precompute.engine.params makes them
STOPS = ("auto", "steps", "exemplar")                # when an MFV image stops (pipeline.plan)
# MFV's default facet pull (pipeline.plan.Synthesis.facet_pull): the unit's gradient alone draws what every facet
# of a neuron shares (the class stamp); a step as large as the unit's, turning the image's embedding code towards
# its own facet's direction, brought the demo's fc8 facet score from 0.70 to 0.81 (the real exemplars': 0.82) and
# EfficientNet-Lite0's from 0.50 (chance) to 0.75 (0.73), its retention in Lite2's features from 0.58 to 0.67, with
# top-1 under the second network 95% and 83% (benchmarks/sweep_facets.py, docs/synthesis.md).
FACET_PULL = 1.0
# MFV's default seed penalty at 64 px and above (feature accentuation's regularizer: mean squared pixel change from
# the init, Synthesis.seed_penalty): with the pull alone EfficientNet-Lite0's facet images kept their inits' layout
# in pixels for 0.58-0.83 of the facets (the build / the sweep); with this penalty for 1.00, retention in Lite2's
# features 0.67 either way, top-1 under Lite2 88% (83%). Below 64 px the stop at the exemplar keeps the layout.
SEED_PENALTY = 100.0
