"""Facet Atlas precompute: Multifaceted Feature Visualization for every neuron, into a store.

Public API (the dashboard's reruns use it):
    BuildConfig, build_atlas  - build or resume an atlas store
    rerun_neuron              - one neuron with other settings, saved as a new run
    list_layers               - a model's addressable layers
    Lookup                    - which neurons and facets an image drives (the dashboard's Lookup page)
Imported lazily, so `precompute.core.store` can be used without importing torch.
"""
__version__ = "0.1.0"
__all__ = ["BuildConfig", "Lookup", "build_atlas", "list_layers", "rerun_neuron", "__version__"]


def __getattr__(name):
    if name == "Lookup":
        from .lookup import Lookup
        return Lookup
    if name in __all__:
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'precompute' has no attribute {name!r}")
