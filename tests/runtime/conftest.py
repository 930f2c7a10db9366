"""A real Ray for the runtime tier: two CPUs, like the machines this suite runs on."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray
import yaml

from red_api.spec import parse_manifest
from red_runtime.engine.events import Reporter, Sink

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Recorder(Sink):
    """Keeps everything the driver reports, for assertions."""

    def __init__(self):
        self.info = None
        self.reports = []
        self.nodes = []
        self.summary = None
        self.failure = None

    def started(self, info, nodes):
        self.info = info

    def round_done(self, report, nodes):
        self.reports.append(report)
        self.nodes = [copy.copy(n) for n in nodes]

    def finished(self, summary, params, model):
        self.summary = summary
        self.params = params

    def failed(self, reason):
        self.failure = reason


def example(name: str = "digits-star", **overrides) -> dict:
    doc = yaml.safe_load((ROOT / "manifests/examples" / f"{name}.yaml").read_text())
    for dotted, value in overrides.items():
        target = doc["spec"]
        *path, last = dotted.split(".")
        for key in path:
            target = target.setdefault(key, {})
        target[last] = value
    return doc


def rounds_done(out: Path) -> int:
    """Rounds a run folder's metrics.jsonl holds (one line per round, flushed as each ends)."""
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def run(doc: dict, checkpoints: Path | None = None) -> Recorder:
    """The driver on the suite's Ray; `checkpoints` is the run folder's checkpoint folder, where it has one."""
    from red_runtime.engine.driver import Driver

    rec = Recorder()
    Driver(parse_manifest(doc), Reporter([rec]), checkpoint_dir=checkpoints).run()
    return rec


@pytest.fixture
def run_federation(ray_cluster):
    return run
