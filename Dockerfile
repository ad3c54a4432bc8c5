# syntax=docker/dockerfile:1
# asrserve: streaming speech recognition server (WebSocket, OpenAI-compatible HTTP and realtime).
#
#   docker build -t asrserve .
#   docker run -p 6006:6006 asrserve                                   # demo model, ws://localhost:6006
#   docker run -p 6006:6006 -v "$PWD/models:/models" asrserve serve --host 0.0.0.0 --model /models/my-model
#   docker run -v "$PWD:/data" asrserve transcribe /data/clip.wav
#   docker run -p 6006:6006 -v "$PWD/secrets:/secrets:ro" asrserve serve --host 0.0.0.0 \
#       --auth-token-file /secrets/tokens.txt --tls-cert /secrets/cert.pem --tls-key /secrets/key.pem

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY asrserve ./asrserve
# installs this checkout (a path, not a registry package: nothing to pin here)
# hadolint ignore=DL3013
RUN pip install '.[ncnn,quantize]'

FROM python:3.11-slim
# libgomp1: OpenMP runtime for ncnn; Debian's security updates are wanted, so no pin
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 asrserve \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/asrserve asrserve \
    && mkdir -p /models \
    && chown 10001:10001 /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASRSERVE_MODELS_DIR=/models
# pulled and mounted models live here
VOLUME ["/models"]
USER 10001:10001
WORKDIR /home/asrserve
EXPOSE 6006
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["asrserve", "healthcheck", "--port", "6006"]
ENTRYPOINT ["asrserve"]
CMD ["serve", "--host", "0.0.0.0", "--port", "6006"]
