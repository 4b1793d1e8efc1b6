# The dmtwin image: the `dmtwin` CLI with the twin, the Faust worker and the simulator.
# docker-compose.yml builds it for its `worker` and `simulator` services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install . \
    && useradd --create-home --uid 10001 dmtwin \
    && mkdir -p /app/data && chown dmtwin /app/data

USER dmtwin
# Prometheus metrics of the worker (streams.ops.metrics; scraped by deploy/prometheus.yml).
EXPOSE 9108
CMD ["dmtwin", "--help"]
