FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/asrserve
COPY pyproject.toml README.md ./
COPY asrserve ./asrserve
COPY models ./models
RUN pip install --no-cache-dir -e '.[ncnn,quantize]'

EXPOSE 6006
# Default: the WebSocket server on port 6006 with the built-in demo model.
#   docker run -p 6006:6006 asrserve                       # serve
#   docker run -p 6006:6006 -v "$PWD/m:/m" asrserve serve --host 0.0.0.0 --model /m
#   docker run -v "$PWD:/data" asrserve transcribe /data/clip.wav
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6006/healthz')"
ENTRYPOINT ["asrserve"]
CMD ["serve", "--host", "0.0.0.0", "--port", "6006"]
