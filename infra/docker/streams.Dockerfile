# CityBrain's stream image: stream workers (fusion), the gateway, the lake sinks, the notifier and the
# operations view, each one command of the image (the Deployment's args pick it). Built from the same set-up
# as a developer's machine: the project installed with its `streams` extra, as infra/setup.sh does.
# tests/unit/test_images.py parses this file and runs its install step in the setup's environment.
FROM python:3.11-slim-bookworm

WORKDIR /opt/citybrain
COPY pyproject.toml README.md ./
COPY citybrain ./citybrain
COPY schemas ./schemas
COPY expectations ./expectations
COPY infra ./infra
RUN python -m pip install --no-cache-dir ".[streams]"

ENV CITYBRAIN_STATE_DIR=/var/lib/citybrain \
    CITYBRAIN_SCHEMAS_DIR=/opt/citybrain/schemas \
    CITYBRAIN_FEEDS_DIR=/opt/citybrain/infra/feeds \
    CITYBRAIN_EXPECTATIONS_DIR=/opt/citybrain/expectations
RUN useradd --uid 10001 --create-home citybrain && mkdir -p /var/lib/citybrain && chown citybrain /var/lib/citybrain
USER 10001
EXPOSE 8311 8320
ENTRYPOINT ["citybrain"]
CMD ["streams", "fusion"]
