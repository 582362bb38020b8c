# The pipeline image: TFX 1.16 and the digits package, for the Kubeflow Pipelines v2 components,
# Dataflow workers' setup (setup.py) and the scheduled-runs CronJob (`digits run`).
# Build from the repository root:  docker build -f k8s/images/pipeline.Dockerfile \
#   -t ghcr.io/digits-ml/digits-pipeline:0.1.0 .
FROM python:3.10.13-slim-bookworm

# The locked dependencies alone first, so a change of the sources reuses this (large) layer.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

# Editable on purpose: the KFP spec names /opt/digits/components/schema/schema.pbtxt and Dataflow stages
# /opt/digits/setup.py, so the sources stay at this path rather than only in site-packages.
WORKDIR /opt/digits
COPY . /opt/digits
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation -e /opt/digits

# HOME=/tmp: the user has no home directory and the root filesystem is read-only in Kubernetes, where
# /tmp is an emptyDir (Keras, matplotlib and gcloud libraries write caches under HOME).
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

# A numeric non-root user (> 10000, no passwd entry needed) so runAsNonRoot can verify it.
USER 10001:10001

# A batch image: nothing long-running to probe (Kubernetes judges the pods by their exit code).
HEALTHCHECK NONE

# No ENTRYPOINT: TFX's Kubeflow v2 launcher sets the command itself
# (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor), and the CronJob runs `digits run`.
CMD ["digits", "--help"]
