"""Learning: datasets and their partition, models, local training (serial and vectorised), privacy,
compression, simulated adversaries and stragglers, and the strategies that combine updates.

Torch and numpy only, no Ray: everything here runs in one process and is tested as plain functions.
"""
