"""Entry points: launch (the one "run this Federation or its sweep" sequence, for `red run` and the
RayJob), the `red` CLI, serving, fetching a run folder, and the Pods' preStop drain.
"""
