# syntax=docker/dockerfile:1
# The exporter image: small (slim Python, no compilers, no caches) and runs as a non-root user.
# The wheel carries the generated dashboards, which the one-shot `grafana-tenants` setup imports.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# exporter/dashboards links here: the wheel takes the dashboards' JSON from this copy.
COPY grafana/dashboards ./grafana/dashboards
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[tenancy]'

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'accounting-sync-exporter[tenancy]' \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin exporter
WORKDIR /app
USER 10001:10001
EXPOSE 9839
# The probe reads the listen address and web config (TLS) as serve does, from
# ACCOUNTING_SYNC_* variables or --config: set the port and TLS there, not only as serve's
# flags, and the probe follows. /healthz answers without credentials (docs/install.md).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
    CMD ["accounting-sync-exporter", "healthcheck"]
ENTRYPOINT ["accounting-sync-exporter"]
CMD ["serve"]
