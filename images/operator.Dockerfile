# The operator image (`red operator`): Red without its training stack. The operator imports kopf, the
# Kubernetes client, PyYAML and prometheus_client, never Ray, torch or numpy (the spec model reads the
# strategies' rules from red_runtime/strategies/catalog.py), so only those are installed and red itself goes
# in with --no-deps. tests/helm/test_images.py and tests/unit/test_operator_image.py hold this list to what
# the operator imports, the latter through a whole reconcile of every example with nothing else installed.
# Build from the repository root: docker build -f images/operator.Dockerfile .
# BASE: any Debian-based Python 3.11 image with pip on PATH (tests/cluster/images builds a stand-in).
ARG BASE=python:3.11.13-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY operator operator
RUN pip install --no-cache-dir "kopf>=1.37" "kubernetes>=29.0" "pyyaml>=6.0" "prometheus-client" \
    && pip install --no-cache-dir --no-deps . \
    && rm -rf /src

WORKDIR /
# Numeric, so that the kubelet can verify runAsNonRoot; the chart runs it as the same user.
USER 10001:10001
EXPOSE 8000 8080
ENTRYPOINT ["red"]
CMD ["operator"]
