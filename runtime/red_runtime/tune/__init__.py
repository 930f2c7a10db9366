"""Sweeps with Ray Tune: every trial a whole federation run by engine's driver; trial rows, progress
and the sweep's status.
"""
