"""A PNG of test accuracy and loss per round: the picture a user checks first."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [h["round"] for h in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(rounds, [h["accuracy"] for h in history], marker="o", ms=3, label="test (global model)")
    if history and "eval_accuracy" in history[0]:
        ax_acc.plot(rounds, [h["eval_accuracy"] for h in history], ls="--", label="nodes' eval split")
    ax_acc.set(xlabel="round", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    ax_loss.plot(rounds, [h["loss"] for h in history], marker="o", ms=3, color="tab:red", label="test loss")
    if history and "train_loss" in history[0]:
        ax_loss.plot(rounds, [h["train_loss"] for h in history], ls="--", color="tab:orange", label="train loss")
    ax_loss.set(xlabel="round", ylabel="cross-entropy", title="Loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(loc="upper right")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
