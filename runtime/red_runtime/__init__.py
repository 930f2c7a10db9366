"""Red's runtime, in layers that import only downwards (tests/unit/test_layers.py keeps it so):

    learn/   datasets, models, local training, privacy, strategies (torch and numpy; no Ray)
    engine/  the driver on Ray: node actors, placement, topology, rounds, health, checkpoints, events
    report/  the events' sinks: console, run folder, object storage, tracking, Kubernetes status, plots
    tune/    sweeps with Ray Tune, every trial a federation
    apps/    launch (`red run` and the RayJob), the CLI, serving, fetch, drain

Beneath them: red_api (the Federation API) and this package's stdlib-only helpers (strict_json, files).
"""

__version__ = "0.1.0"
