"""FedAvg (McMahan et al., 2017): the sample-weighted mean of the nodes' models."""

from red_runtime.learn.strategies.base import Strategy


class FedAvg(Strategy):
    name = "fedavg"
