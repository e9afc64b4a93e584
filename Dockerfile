# pneumo serve: the HTTP API and web page, with the model shipped in the package (pneumo/assets/model/).
#
#   docker build -t pneumo .
#   docker run --rm -p 127.0.0.1:8000:8000 -e PNEUMO_API_KEY pneumo               # then http://127.0.0.1:8000/
#   docker run --rm -p 127.0.0.1:8000:8000 pneumo --workers 2 --max-upload-mb 10   # more `pneumo serve` options
#
# Behind a reverse proxy with TLS, and what every option does: docs/serving.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# The build context is only what the package needs (see .dockerignore): the code, its assets and
# the shipped model, never data, models/, eval/ or a virtual environment.
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin pneumo

# Not root: the service reads its model from the installed package and writes nothing.
USER pneumo
WORKDIR /home/pneumo

EXPOSE 8000

# No curl in the slim image: Python's urllib asks /readyz, so the container is healthy only once the
# model is loaded and warm (a model that failed to load leaves the process up, but /readyz answers 503).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]

# Inside a container the service must listen on 0.0.0.0 to be reachable through a published port
# at all (127.0.0.1 would be the container's own loopback). Publish it on the host's loopback only,
# `-p 127.0.0.1:8000:8000`, and put a TLS proxy in front for anything beyond this host.
# Options given to `docker run` after the image name are added to this command.
ENTRYPOINT ["pneumo", "serve", "--host", "0.0.0.0", "--port", "8000"]
