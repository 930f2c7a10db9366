"""Red's runtime: the Federation spec model and the federated-learning driver on Ray."""

__version__ = "0.1.0"
# The Ray that Red pins (pyproject.toml) and that its runtime image carries; KubeRay needs it stated on the
# RayCluster (spec.rayVersion) to turn on Ray's token authentication.
RAY_VERSION = "2.60.0"
