"""Where a run's events go: the console, the run folder (local or s3://), object storage, tracking (MLflow,
TensorBoard), the Federation's status on Kubernetes, and plots. Sinks of engine.events.
"""
