"""`python -m precompute export`: a store as a static site (precompute.export.site) that any web host serves.

reads.py    the store, read-only          neurons.py   Neuron documents and Atlas index rows, a layer at a time
files.py    images by content, JSON        evidence.py  the Layers page        tables.py  Arrow tables for SQL
vendor.py   the pages (web/) and DuckDB-WASM (installed by npm ci --prefix precompute/export/web)
"""
