"""FedProx (Li et al., 2020): FedAvg on the server; nodes add (mu/2)·||w - w_global||² to their loss."""

from red_runtime.strategies.base import Option, Strategy


class FedProx(Strategy):
    name = "fedprox"
    options = {"mu": Option(0.01, minimum=0)}

    @property
    def proximal_mu(self) -> float:
        return float(self.opts["mu"])
