# The runtime image: Ray and Red for a Federation's RayCluster (the head runs the driver, the workers the
# node actors); spec.ray.image's default. The base's Ray is the Ray Red is tested with
# (tests/helm/test_images.py), so installing red keeps it instead of pulling another.
# Build from the repository root: docker build -f images/runtime.Dockerfile .
# BASE: rayproject/ray or an image laid out like it (tests/cluster/images builds a stand-in).
ARG BASE=rayproject/ray:2.60.0-py311
FROM ${BASE}

# The base runs as its unprivileged `ray` user (uid 1000), which owns its Python environment.
USER 1000:100
WORKDIR /tmp/red
# Red's dependencies first, in a layer of their own: a change to Red's source then rebuilds only the
# small layer below instead of reinstalling torch.
COPY --chown=1000:100 pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\\n')" \
      > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY --chown=1000:100 README.md ./
COPY --chown=1000:100 api api
COPY --chown=1000:100 runtime runtime
COPY --chown=1000:100 operator operator
RUN pip install --no-cache-dir --no-deps . && rm -rf /tmp/red
WORKDIR /home/ray
