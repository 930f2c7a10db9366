# The operator image (`python -m red_operator`): the Federation API (api/red_api) and the operator, nothing
# of the runtime. The operator imports kopf, the Kubernetes client, PyYAML and prometheus_client, never Ray,
# torch or numpy, so only those are installed, and the two packages are copied in as they are.
# tests/helm/test_images.py and tests/unit/test_operator_image.py hold this list to what the operator
# imports, the latter through a whole reconcile of every example with nothing else installed.
# Build from the repository root: docker build -f images/operator.Dockerfile .
# BASE: any Debian-based Python 3.11 image with pip on PATH (tests/cluster/images builds a stand-in).
ARG BASE=python:3.11.13-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "kopf>=1.37" "kubernetes>=29.0" "pyyaml>=6.0" "prometheus-client"
COPY api/red_api /opt/red/red_api
COPY operator/red_operator /opt/red/red_operator
ENV PYTHONPATH=/opt/red

WORKDIR /
# Numeric, so that the kubelet can verify runAsNonRoot; the chart runs it as the same user.
USER 10001:10001
EXPOSE 8000 8080
ENTRYPOINT ["python3", "-m", "red_operator"]
