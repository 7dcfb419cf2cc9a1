# Build stage: install the locked dependencies and the package into a virtualenv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for the hot path's compiled twins (setup.py); the runtime stage has none.
# Debian's gcc of the base image's release: pinning its exact version would break the build
# at every Debian point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /venv && /venv/bin/pip install --require-hashes -r requirements.lock \
    && python -m venv /build && /build/bin/pip install --require-hashes -r requirements-build.lock
COPY pyproject.toml setup.py README.md ./
COPY ingestor ./ingestor
# Built with the locked Cython (no build isolation) in /build; the runtime venv gets the wheel
# alone, and refuses to go on if its C twins are missing (a silent fallback would cost CPU;
# -I: the installed package, not the sources in the working directory).
RUN /build/bin/pip wheel --no-deps --no-build-isolation -w /wheels . \
    && /venv/bin/pip install --no-deps /wheels/*.whl \
    && /venv/bin/python -I -c "from ingestor.cli.app import COMPILED; assert COMPILED"

# Runtime stage: the virtualenv, the migrations and the example config; no build tools.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --no-create-home ingestor
COPY --from=build /venv /venv
WORKDIR /app
COPY alembic ./alembic
COPY config ./config
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INGESTOR_ALEMBIC_DIR=/app/alembic \
    INGESTOR_CONFIG=/app/config/ingestor.toml
USER 10001:10001
EXPOSE 9108
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('INGESTOR_METRICS_PORT', '9108'), timeout=3)"]
# Exec form: the daemon runs as PID 1 and receives SIGTERM itself (no shell in between).
ENTRYPOINT ["ingestor"]
CMD ["run"]
