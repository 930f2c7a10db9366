"""FedProx (Li et al., 2020): FedAvg on the server; nodes add (mu/2)·||w - w_global||² to their loss."""

from red_runtime.learn.strategies.base import Strategy


class FedProx(Strategy):
    name = "fedprox"  # option mu: red_api/catalog.py

    @property
    def proximal_mu(self) -> float:
        return float(self.opts["mu"])
