"""A PNG of test accuracy and loss per round: the picture a user checks first."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def warm_plotting() -> None:
    """Import what plot_history needs (matplotlib with its file-only backend), ahead of the first plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import matplotlib.ticker  # noqa: F401


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    warm_plotting()
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


def plot_trials(
    histories: dict[str, list[dict[str, Any]]], path: Path, best: str | None = None, title: str = ""
) -> None:
    """trials.png: test accuracy per round for every trial of a sweep; the best drawn bold, a trial the
    scheduler stopped early ends where it stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    for trial, history in sorted(histories.items()):
        if not history:
            continue
        rounds = [h["round"] for h in history]
        accuracy = [h["accuracy"] for h in history]
        if trial == best:
            ax.plot(rounds, accuracy, marker="o", ms=4, lw=2.5, color="black", label=f"{trial} (best)", zorder=3)
        else:
            ax.plot(rounds, accuracy, marker=".", ms=3, lw=1, alpha=0.7, label=trial)
    ax.set(xlabel="round", ylabel="test accuracy", title=title or "Accuracy per round, every trial", ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
