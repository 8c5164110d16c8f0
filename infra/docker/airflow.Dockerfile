# CityBrain's Airflow image: the api-server, scheduler, dag-processor, triggerer and Celery workers of the
# cluster (infra/cluster/airflow.cfg), each one `airflow` command of the image. Built from the same set-up as
# a developer's machine: the project installed with its `airflow` extra (Airflow 3.3, Great Expectations,
# the PostgreSQL drivers), as infra/setup.sh does, plus the cluster's executor and auth manager.
# tests/unit/test_images.py parses this file and runs its install step in the setup's environment.
FROM python:3.11-slim-bookworm

WORKDIR /opt/citybrain
COPY pyproject.toml README.md ./
COPY citybrain ./citybrain
COPY schemas ./schemas
COPY expectations ./expectations
COPY infra ./infra
COPY dags ./dags
RUN python -m pip install --no-cache-dir ".[airflow]"
RUN python -m pip install --no-cache-dir "apache-airflow-providers-celery>=3.10" "apache-airflow-providers-fab>=2.0" "redis>=5"

ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_CONFIG=/opt/citybrain/infra/cluster/airflow.cfg \
    CITYBRAIN_STATE_DIR=/var/lib/citybrain \
    CITYBRAIN_SCHEMAS_DIR=/opt/citybrain/schemas \
    CITYBRAIN_EXPECTATIONS_DIR=/opt/citybrain/expectations \
    GX_ANALYTICS_ENABLED=false
RUN useradd --uid 50000 --create-home airflow && mkdir -p /opt/airflow /var/lib/citybrain \
    && chown airflow /opt/airflow /var/lib/citybrain
USER 50000
EXPOSE 8080
ENTRYPOINT ["airflow"]
CMD ["scheduler"]
