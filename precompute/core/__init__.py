"""The torch-free core that the engine and the dashboard share: the store (Parquet parts and
atlas.duckdb, its schema), errors, the paper's claims and the evidence report. Nothing here imports
torch, so a hosted dashboard installs and copies only this (see the Dockerfile)."""
