# A hosted, read-only Facet Atlas: the dashboard with an atlas baked in (or mounted at /atlas).
#   docker build -t facet-atlas .                              # bakes in data/demo
#   docker build --build-arg STORE=data/my-atlas -t my-atlas .
#   docker run -p 8501:8501 facet-atlas                        # http://localhost:8501
#   docker run -p 8501:8501 -v /srv/atlas:/atlas:ro facet-atlas   # serve a mounted store instead
FROM python:3.11-slim
WORKDIR /app
COPY dashboard/requirements.txt requirements-dashboard.txt
RUN pip install --no-cache-dir -r requirements-dashboard.txt
COPY .streamlit/config.toml .streamlit/config.toml
COPY dashboard/ dashboard/
# the torch-free core of the engine package, nothing else of it (tests/test_hosting.py runs this copy)
COPY precompute/__init__.py precompute/__init__.py
COPY precompute/core/ precompute/core/
ARG STORE=data/demo
COPY ${STORE} /atlas
# build atlas.duckdb from the Parquet parts now, so the server never writes into /atlas
RUN python -c "from precompute.core.store import ensure_database; print(ensure_database('/atlas'))"
ENV ATLAS_STORE=/atlas ATLAS_MODE=public FACET_ATLAS_CACHE=/tmp/facet-atlas
USER nobody
EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
CMD ["streamlit", "run", "dashboard/app.py", "--server.port=8501", "--server.address=0.0.0.0", \
     "--client.showErrorDetails=none", "--client.toolbarMode=viewer"]
