# The draw-a-digit app (web/) with the model server's client it uses (serving/client/:
# ModelClient and MNIST-form image preparation): no TensorFlow, only numpy, Pillow, FastAPI and uvicorn at the locked versions.
# Build from the repository root:  docker build -f k8s/images/web.Dockerfile \
#   -t ghcr.io/digits-ml/digits-web:0.1.0 .
FROM python:3.10.13-slim-bookworm

# requirements.lock as constraints: exactly the versions the tests ran with, and nothing else from it.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --disable-pip-version-check -c /tmp/requirements.lock numpy pillow fastapi uvicorn \
    && rm /tmp/requirements.lock

# What the app imports: web/, the model server's client (serving/client/), none of the server, and the
# span store feedback is written with (components/data/spans.py; TensorFlow only for object stores, not here).
WORKDIR /opt/digits
COPY serving/__init__.py /opt/digits/serving/__init__.py
COPY serving/client /opt/digits/serving/client
COPY components/__init__.py /opt/digits/components/
COPY components/data/__init__.py components/data/span_checks.py components/data/span_files.py components/data/spans.py \
     /opt/digits/components/data/
COPY web /opt/digits/web

# HOME=/tmp: no home directory and a read-only root filesystem in Kubernetes, where /tmp is an emptyDir.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    DIGITS_UI_HOST=0.0.0.0 \
    DIGITS_UI_PORT=8080

# A numeric non-root user (> 10000, no passwd entry needed) so runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["python", "-m", "web"]
