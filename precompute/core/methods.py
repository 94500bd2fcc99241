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
