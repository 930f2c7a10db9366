"""Red's runtime: the Federation spec model and the federated-learning driver on Ray."""

__version__ = "0.1.0"
from red_api.names import RAY_VERSION  # noqa: E402, F401 - the Ray that Red pins (pyproject.toml)
