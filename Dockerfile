# One image for every jobrunner service: `jobrunner worker --pool NAME` and `jobrunner flower`
# (docker-compose.yml runs one container per configured pool).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JOBRUNNER_DATA_DIR=/data

WORKDIR /app
# Metadata first, so the dependency layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
COPY jobrunner ./jobrunner
COPY config ./config
COPY tasks ./tasks
COPY worker ./worker
COPY benchmarks ./benchmarks
RUN pip install . \
    && useradd --system --uid 1000 --home-dir /data --shell /usr/sbin/nologin jobrunner \
    && mkdir -p /data && chown jobrunner /data

USER jobrunner
# No ENTRYPOINT wrapper: compose runs `jobrunner ...` in exec form, and jobrunner execs Celery,
# so Celery is PID 1 and gets SIGTERM itself (a warm shutdown).
CMD ["jobrunner", "--help"]
