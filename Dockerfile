# syntax=docker/dockerfile:1
# One image for every project service (detector, simulator, collector, first-start init).
# Multi-stage: the build stage installs the project into a virtualenv; the runtime stage copies only
# that virtualenv onto a slim Python and runs as an unprivileged user (uid 10001, see plm/ops/stack.py).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/plm
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY plm ./plm
COPY collector ./collector
COPY detector ./detector
COPY simulator ./simulator
# numpy, scipy, numba/llvmlite and dbus-fast ship manylinux wheels: no compiler in this stage. One image serves
# every service, so it has the collector's and the detector's extras (pyproject.toml: installable by role).
# Reproducible: every package at the exact version in constraints.txt (committed, refreshed deliberately; CI
# tests with the same file), so two builds a month apart install the same packages. Not pinned: the build-only
# setuptools/wheel that package the project itself, and the base image (a tag; pin PYTHON_IMAGE by digest,
# python:3.11.11-slim-bookworm@sha256:..., for a bit-identical base)
RUN /opt/plm/bin/pip install -c constraints.txt '.[collector,detector]' && /opt/plm/bin/plm --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="plm-monitor" \
      org.opencontainers.image.description="Overnight leg-movement monitor. Measures; does not diagnose." \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 plm \
    && useradd --system --uid 10001 --gid plm --home-dir /var/lib/plm --shell /usr/sbin/nologin plm \
    && mkdir -p /var/lib/plm/detector /var/lib/plm/collector /var/lib/plm/simulator /secrets \
    && chown -R plm:plm /var/lib/plm
COPY --from=build /opt/plm /opt/plm
ENV PATH=/opt/plm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PLM_DETECTOR__STATE_DIR=/var/lib/plm/detector \
    PLM_COLLECTOR__QUEUE_DIR=/var/lib/plm/collector \
    NUMBA_CACHE_DIR=/var/lib/plm/numba-cache
WORKDIR /var/lib/plm
USER plm
ENTRYPOINT ["plm"]
CMD ["--help"]
