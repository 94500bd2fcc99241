"""Building an atlas: a BuildConfig planned once (plan), its chunks built (chunks) by an executor in
this process or on Ray (executors), the runs kept in the store (atlas).

Public API: BuildConfig, build_atlas, rerun_neuron, list_layers.
"""
from .atlas import DATA_FREE, BuildSummary, build_atlas, list_layers, rerun_neuron
from .plan import BuildConfig

__all__ = ["BuildConfig", "BuildSummary", "DATA_FREE", "build_atlas", "list_layers", "rerun_neuron"]
