"""The federation engine on Ray: the driver, node actors and their pool, placement on the cluster, the
topology, the rounds each topology runs (rounds/), health, checkpoints, stopping, and the events the
driver reports (events.py, whose sinks live in report/).

Imports learn/ and red_api; never report/, tune/ or apps/.
"""
