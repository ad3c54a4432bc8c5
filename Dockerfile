FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/asrserve
COPY pyproject.toml README.md ./
COPY asrserve ./asrserve
COPY models ./models
RUN pip install --no-cache-dir -e .

EXPOSE 6006
# `asrserve serve` (the WebSocket server, port 6006) becomes the default
# command when it lands; today the image transcribes files:
#   docker run -v "$PWD:/data" asrserve transcribe /data/clip.wav
ENTRYPOINT ["asrserve"]
CMD ["--help"]
