"""Red's runtime: the Federation spec model and the federated-learning driver on Ray."""

__version__ = "0.1.0"
