# The runtime image: Ray and Red for a Federation's RayCluster (the head runs the driver, the workers the
# node actors); spec.ray.image's default. The base's Ray is the Ray Red is tested with
# (tests/helm/test_images.py), so installing red keeps it instead of pulling another.
# Build from the repository root: docker build -f images/runtime.Dockerfile .
FROM rayproject/ray:2.60.0-py311

# The base runs as its unprivileged `ray` user (uid 1000), which owns its Python environment.
USER 1000:100
WORKDIR /tmp/red
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 runtime runtime
COPY --chown=1000:100 operator operator
RUN pip install --no-cache-dir . && rm -rf /tmp/red
WORKDIR /home/ray
