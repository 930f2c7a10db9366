"""The Federation spec model: one parser and validator for the driver, `red run` and the operator.

A manifest is parsed into frozen dataclasses with defaults filled in. Every problem is collected with
its field path and value, so a user fixes a manifest in one pass instead of one error at a time.
The CRD in crds/ expresses the same rules as an OpenAPI schema; tests keep the two in agreement.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from red_runtime.pod_options import POD_FIELDS, pod_options
from red_runtime.strategies import catalog

API_GROUP = "red.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "Federation"

TOPOLOGIES = ("star", "ring", "mesh", "kregular", "custom", "hierarchical")
ALGORITHMS = catalog.NAMES
DATASETS = ("digits", "synthetic")
PARTITIONS = ("iid", "dirichlet", "labels", "quantity")
MODELS = ("logreg", "mlp", "cnn")
OPTIMIZERS = ("sgd", "adam")
# Whether an actor trains its nodes together in one batched computation (vectorized.py). Words, not on/off,
# which YAML would read as booleans.
VECTORIZE = ("auto", "always", "never")
# Whether an actor holds generated node data between rounds or makes it again from (seed, node) (data.py).
CACHE = ("auto", "always", "never")
ROLES = ("train", "eval", "test")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode")
MIXING = ("metropolis", "datasize")
DIVERGENCE = ("fail", "continue")
COMPRESSIONS = ("none", "topk", "quantize")
# Simulated attackers, and the strength each attack takes when `scale` is not given (adversaries.py).
ATTACK_SCALES = {"signflip": 5.0, "gaussian": 1.0, "labelflip": None, "scale": 10.0}

# KubeRay names the head Service "<cluster>-head-svc" and Pods "<cluster>-head-xxxxx"; Services are
# DNS labels (63 chars). Red names the RayCluster "<federation>-ray", so 63 - len("-ray-head-svc").
MAX_NAME_LENGTH = 50
# Kueue: the label that queues a Federation, the one that gives its Workload a priority, and what Kueue
# admits of a RayCluster (one PodSet per group: the head and at most seven worker groups).
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
MAX_QUEUED_WORKER_GROUPS = 7
# "pkg.module:attr" points at a user's dataset factory or model class.
IMPORT_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# An S3 bucket (3-63 lowercase letters, digits, dots, hyphens) and an optional prefix.
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")
# An MLflow tracking server, a host required. Not file: (MLflow 3 refuses its file store unless told to) nor
# sqlite: (the SQL stores are not in mlflow-skinny, which the runtime image carries): run `mlflow server`.
TRACKING_URI = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
MAX_EXPERIMENT_LENGTH = 256  # MLflow's SQL stores keep experiment names in a VARCHAR(256)
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
INT64_MAX = 2**63 - 1
# The CRD's rules over a group's Pod fields are costed per group: the API server needs a bound.
MAX_WORKER_GROUPS = 16
# scikit-learn's bundled digits are the ten digits 0-9 (tests/unit/test_data_sizes.py checks the data).
DIGITS_CLASSES = 10


class SpecError(ValueError):
    """A manifest that cannot run; `problems` holds one "path: value: reason" line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid Federation:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Topology:
    kind: str = "star"
    degree: int | None = None
    edges: tuple[tuple[int, int], ...] = ()
    groups: int | None = None
    mixing: str = "metropolis"


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class Adversaries:
    """Nodes, chosen with the seed, that send poisoned updates: for trying robust strategies."""

    count: int = 0
    attack: str = "signflip"
    scale: float | None = None  # the attack's default (ATTACK_SCALES) when None


@dataclass(frozen=True)
class Stragglers:
    """Nodes, chosen with the seed, that train `slowdown` times slower: for trying asynchronous rounds."""

    count: int = 0
    slowdown: float = 10.0


@dataclass(frozen=True)
class Nodes:
    count: int = 8
    role: str = "train-eval"
    resources: Resources = field(default_factory=Resources)
    adversaries: Adversaries = field(default_factory=Adversaries)
    stragglers: Stragglers = field(default_factory=Stragglers)

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.role.split("-"))


@dataclass(frozen=True)
class Placement:
    strategy: str = "PACK"


@dataclass(frozen=True)
class Privacy:
    clip: float = 1.0
    noiseMultiplier: float = 0.0
    delta: float = 1e-5


@dataclass(frozen=True)
class Algorithm:
    name: str = "fedavg"
    options: Mapping[str, Any] = field(default_factory=dict)
    fraction: float = 1.0
    minNodes: int = 1
    targetAccuracy: float | None = None
    privacy: Privacy | None = None


@dataclass(frozen=True)
class Dataset:
    name: str = "digits"
    samplesPerNode: int = 256
    features: int = 32
    classes: int = 10
    testFraction: float = 0.2
    cache: str = "auto"


@dataclass(frozen=True)
class Partition:
    kind: str = "iid"
    alpha: float = 0.5
    labels: int = 2


@dataclass(frozen=True)
class Model:
    name: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    channels: tuple[int, ...] = (8, 16)
    personal: tuple[str, ...] = ()  # layers each node keeps for itself (FedPer)
    localNorm: bool = False  # normalisation layers and their statistics stay local (FedBN)

    @property
    def personalised(self) -> bool:
        return bool(self.personal) or self.localNorm


@dataclass(frozen=True)
class Train:
    epochs: int = 1
    batchSize: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.0
    weightDecay: float = 0.0
    vectorize: str = "auto"


@dataclass(frozen=True)
class Task:
    dataset: Dataset = field(default_factory=Dataset)
    partition: Partition = field(default_factory=Partition)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    seed: int = 0


@dataclass(frozen=True)
class Checkpoint:
    every: int = 0
    path: str = ""
    keep: int = 3


@dataclass(frozen=True)
class Claim:
    """A PersistentVolumeClaim: an existing one (claimName), else one the operator creates (size, class)."""

    claimName: str = ""
    size: str = "1Gi"
    storageClassName: str = ""  # "": the cluster's default StorageClass


@dataclass(frozen=True)
class Storage:
    """Where a Federation keeps checkpoints and artifacts: a folder `<name>/` on a claim, or under an
    s3:// prefix. Neither given: a claim of its own (Claim defaults)."""

    pvc: Claim | None = None
    uri: str = ""
    secretRef: str = ""  # a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL
    retain: bool = True  # keep a claim the operator created when the Federation is deleted

    @property
    def claim(self) -> Claim:
        return self.pvc or Claim()


@dataclass(frozen=True)
class FaultTolerance:
    maxNodeRestarts: int = 3
    roundTimeoutSeconds: float = 600.0
    maxJobRetries: int = 0
    divergence: str = "fail"  # a NaN or infinite global loss: fail the run (reason Diverged), or continue


@dataclass(frozen=True, kw_only=True)
class PodOptions:
    """Where and how the Pods of the head or of one worker group run: what real clusters need of a Pod.

    Kubernetes-shaped values (a toleration, a volume, an affinity) are kept as the plain mappings the
    manifest gave, checked here and passed through to the Pod. `tolerations` None: the default (a group
    with GPUs tolerates the `nvidia.com/gpu` taint); a list, even an empty one, replaces it.
    """

    nodeSelector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    affinity: Mapping[str, Any] = field(default_factory=dict)
    priorityClassName: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    imagePullSecrets: tuple[str, ...] = ()
    serviceAccountAnnotations: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[Mapping[str, Any], ...] = ()
    volumeMounts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class WorkerGroup(PodOptions):
    name: str
    replicas: int = 1
    cpu: str = "1"
    gpu: int = 0
    memory: str = "4Gi"


@dataclass(frozen=True)
class HeadGroup(PodOptions):
    cpu: str = "2"
    memory: str = "8Gi"


@dataclass(frozen=True)
class RaySpec:
    image: str = "ghcr.io/red-dev/red-runtime:0.1.0"
    head: HeadGroup = field(default_factory=HeadGroup)
    workerGroups: tuple[WorkerGroup, ...] = ()
    submissionMode: str = "K8sJobMode"
    runtimeEnv: Mapping[str, Any] = field(default_factory=dict)
    keepCluster: bool = False


@dataclass(frozen=True)
class Compression:
    kind: str = "none"
    ratio: float = 0.1  # topk: the share of entries sent
    bits: int = 8  # quantize: bits per entry


@dataclass(frozen=True)
class Communication:
    compression: Compression = field(default_factory=Compression)


@dataclass(frozen=True)
class Mlflow:
    """An MLflow tracking server that gets one run per federation run."""

    uri: str
    experiment: str = ""  # "": the Federation's name

    def experiment_for(self, name: str) -> str:
        return self.experiment or name


@dataclass(frozen=True)
class Tracking:
    mlflow: Mlflow | None = None


@dataclass(frozen=True)
class Serve:
    """The finished model behind a Ray Serve endpoint (a KubeRay RayService); what each replica asks Ray for."""

    replicas: int = 1
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class FederationSpec:
    rounds: int = 10
    topology: Topology = field(default_factory=Topology)
    nodes: Nodes = field(default_factory=Nodes)
    placement: Placement = field(default_factory=Placement)
    algorithm: Algorithm = field(default_factory=Algorithm)
    task: Task = field(default_factory=Task)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    faultTolerance: FaultTolerance = field(default_factory=FaultTolerance)
    ray: RaySpec = field(default_factory=RaySpec)
    storage: Storage = field(default_factory=Storage)
    suspend: bool = False
    communication: Communication = field(default_factory=Communication)
    sweep: Any = None  # a red_runtime.sweep.Sweep: the driver runs a Ray Tune sweep of this spec instead
    tracking: Tracking = field(default_factory=Tracking)
    serve: Serve | None = None  # None: nothing is served
    priorityClassName: str = ""  # a Kueue WorkloadPriorityClass, for a queued Federation


@dataclass(frozen=True)
class Federation:
    name: str
    namespace: str
    spec: FederationSpec
    uid: str = ""
    queue: str = ""  # the Kueue LocalQueue (metadata.labels[QUEUE_LABEL]); "": not queued


log = logging.getLogger("red.spec")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


class _Checker:
    """Reads a plain mapping field by field, recording problems instead of raising on the first.

    `stored`: the object came from the API server, whose schema already pruned what the CRD does not
    declare. A field this model does not know is then one of a newer CRD than this code (an operator or
    driver mid-upgrade), not a typo: it is ignored with a warning, so a CRD upgraded before the operator
    never turns running Federations invalid (and their compute released).
    """

    def __init__(self, stored: bool = False) -> None:
        self.problems: list[str] = []
        self.stored = stored

    def fail(self, path: str, value: Any, reason: str) -> None:
        self.problems.append(f"{path}: {value!r}: {reason}")

    def section(self, data: Mapping[str, Any], key: str, path: str, known: tuple[str, ...]) -> dict:
        value = data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", value, "must be a mapping")
            return {}
        self.unknown(value, f"{path}.{key}", known)
        return dict(value)

    def unknown(self, data: Mapping, path: str, known: tuple[str, ...]) -> None:
        # YAML keys need not be strings (`1:`, `~:`), so they are sorted as text.
        for extra in sorted(set(data) - set(known), key=str):
            if self.stored:
                _warn_once(f"{path}.{extra}: not known to this version of Red (a newer CRD?): ignored")
            else:
                self.fail(f"{path}.{extra}", data[extra], f"unknown field (known: {', '.join(known)})")

    def integer(self, data, key, path, default, minimum=None, maximum=None) -> int:
        value = data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", value, "must be an integer")
            return default
        if abs(value) > INT64_MAX:  # the API server's integers are 64-bit; so are torch's and numpy's
            self.fail(f"{path}.{key}", value, "must be a 64-bit integer")
            return default
        return value if self._within(f"{path}.{key}", value, minimum, maximum) else default

    def number(self, data, key, path, default, minimum=None, maximum=None, exclusive_min=False) -> float:
        value = data.get(key, default)
        if value is None:
            return default
        if not catalog.finite_number(value):
            self.fail(f"{path}.{key}", value, "must be a finite number")
            return default
        if exclusive_min and minimum is not None and value <= minimum:
            self.fail(f"{path}.{key}", value, f"must be greater than {minimum}")
            return default
        return (
            float(value)
            if self._within(f"{path}.{key}", value, None if exclusive_min else minimum, maximum)
            else default
        )

    def _within(self, path, value, minimum, maximum) -> bool:
        """Whether value is in bounds; a value out of them is recorded, and the caller carries on with its
        default, so that later checks (arithmetic with nodes.count) only ever see sane values."""
        if minimum is not None and value < minimum:
            self.fail(path, value, f"must be at least {minimum}")
            return False
        if maximum is not None and value > maximum:
            self.fail(path, value, f"must be at most {maximum}")
            return False
        return True

    def choice(self, data, key, path, default, choices, allow_import=False) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", value, "must be a string")
            return default
        if value in choices or (allow_import and IMPORT_REF.match(value)):
            return value
        hint = f"one of {', '.join(choices)}"
        if allow_import:
            hint += ', or "package.module:name"'
        self.fail(f"{path}.{key}", value, f"unknown; expected {hint}")
        return default

    def quantity(self, data, key, path, default) -> str:
        """A Kubernetes quantity, passed through as text; its syntax is the CRD schema's to check."""
        value = data.get(key, default)
        if isinstance(value, str) or catalog.finite_number(value):
            return str(value)
        self.fail(f"{path}.{key}", value, 'must be a Kubernetes quantity: a string such as "500m" or a number')
        return default

    def string(self, data, key, path, default) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", value, "must be a string")
            return default
        return value

    def boolean(self, data, key, path, default) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", value, "must be true or false")
            return default
        return value

    def int_list(self, data, key, path, default, minimum=1) -> tuple[int, ...]:
        value = data.get(key, list(default))
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
        ):
            self.fail(f"{path}.{key}", value, f"must be a list of integers >= {minimum}")
            return tuple(default)
        return tuple(value)


SPEC_FIELDS = (
    "rounds",
    "topology",
    "nodes",
    "placement",
    "algorithm",
    "task",
    "checkpoint",
    "faultTolerance",
    "ray",
    "storage",
    "suspend",
    "communication",
    "sweep",
    "tracking",
    "serve",
    "priorityClassName",
)


def parse_spec(spec: Mapping[str, Any] | None, path: str = "spec", stored: bool = False) -> FederationSpec:
    """Validate a Federation's `spec` mapping and return it with defaults filled in (`stored`: see _Checker)."""
    c = _Checker(stored)
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise SpecError([f"{path}: {spec!r}: must be a mapping"])
    c.unknown(spec, path, SPEC_FIELDS)

    rounds = c.integer(spec, "rounds", path, 10, minimum=1, maximum=100000)
    nodes = _nodes(c, spec, path)
    topology = _topology(c, spec, path, nodes.count)
    placement_raw = c.section(spec, "placement", path, ("strategy",))
    placement = Placement(
        strategy=c.choice(placement_raw, "strategy", f"{path}.placement", "PACK", PLACEMENT_STRATEGIES)
    )
    algorithm = _algorithm(c, spec, path, nodes.count)
    task = _task(c, spec, path, nodes.count)
    _personalisation(c, spec, path, nodes, task.model)
    checkpoint = _checkpoint(c, spec, path)
    ft_raw = c.section(
        spec, "faultTolerance", path, ("maxNodeRestarts", "roundTimeoutSeconds", "maxJobRetries", "divergence")
    )
    fault = FaultTolerance(
        maxNodeRestarts=c.integer(ft_raw, "maxNodeRestarts", f"{path}.faultTolerance", 3, 0, 1000),
        roundTimeoutSeconds=c.number(
            ft_raw, "roundTimeoutSeconds", f"{path}.faultTolerance", 600.0, 0, 86400, exclusive_min=True
        ),
        maxJobRetries=c.integer(ft_raw, "maxJobRetries", f"{path}.faultTolerance", 0, 0, 100),
        divergence=c.choice(ft_raw, "divergence", f"{path}.faultTolerance", "fail", DIVERGENCE),
    )
    ray = _ray(c, spec, path)
    storage = _storage(c, spec, path)
    suspend = c.boolean(spec, "suspend", path, False)
    communication = _communication(c, spec, path, algorithm)
    sweep = _sweep(c, spec, path)
    tracking = _tracking(c, spec, path)
    serve = _serve(c, spec, path, ray)
    priority = c.string(spec, "priorityClassName", path, "")
    if priority and not DNS_SUBDOMAIN.match(priority):
        c.fail(f"{path}.priorityClassName", priority, "must be the name of a Kueue WorkloadPriorityClass")
    if c.problems:
        raise SpecError(c.problems)
    return FederationSpec(
        rounds=rounds,
        topology=topology,
        nodes=nodes,
        placement=placement,
        algorithm=algorithm,
        task=task,
        checkpoint=checkpoint,
        faultTolerance=fault,
        ray=ray,
        storage=storage,
        suspend=suspend,
        communication=communication,
        sweep=sweep,
        tracking=tracking,
        serve=serve,
        priorityClassName=priority,
    )


def _sweep(c: _Checker, spec: Mapping, path: str) -> Any:
    from red_runtime.sweep import sweep_from_spec  # sweep.py validates trials with this module

    if spec.get("sweep") is None:
        return None
    try:
        return sweep_from_spec(spec["sweep"], f"{path}.sweep")
    except ValueError as err:
        c.problems.append(str(err))
        return None


def _nodes(c: _Checker, spec: Mapping, path: str) -> Nodes:
    raw = c.section(spec, "nodes", path, ("count", "role", "resources", "adversaries", "stragglers"))
    p = f"{path}.nodes"
    count = c.integer(raw, "count", p, 8, minimum=1, maximum=100000)
    role = c.string(raw, "role", p, "train-eval")
    parts = role.split("-")
    if not parts or any(r not in ROLES for r in parts) or len(set(parts)) != len(parts):
        c.fail(f"{p}.role", role, f"must be roles from {', '.join(ROLES)} joined by '-', each once")
    elif "train" not in parts:
        c.fail(f"{p}.role", role, "must include train: a federation with no training node learns nothing")
    res_raw = c.section(raw, "resources", p, ("cpu", "gpu"))
    cpu = c.number(res_raw, "cpu", f"{p}.resources", 1.0, minimum=0)
    gpu = c.number(res_raw, "gpu", f"{p}.resources", 0.0, minimum=0)
    if cpu == 0 and gpu == 0:
        c.fail(f"{p}.resources", dict(res_raw), "a node actor needs some cpu or gpu")
    for key, value in (("cpu", cpu), ("gpu", gpu)):
        # Ray accepts a fraction below 1 or a whole number, nothing in between (1.5 GPUs is refused).
        if value > 1 and value != int(value):
            c.fail(f"{p}.resources.{key}", value, "must be a fraction below 1 or a whole number")
    return Nodes(
        count=count,
        role=role,
        resources=Resources(cpu=cpu, gpu=gpu),
        adversaries=_adversaries(c, raw, p, count),
        stragglers=_stragglers(c, raw, p, count),
    )


def _adversaries(c: _Checker, nodes: Mapping, path: str, count: int) -> Adversaries:
    raw = c.section(nodes, "adversaries", path, ("count", "attack", "scale"))
    p = f"{path}.adversaries"
    many = c.integer(raw, "count", p, 0, minimum=0, maximum=100000)
    if many >= count:
        c.fail(f"{p}.count", many, f"leaves no honest node of nodes.count ({count})")
    attack = c.choice(raw, "attack", p, "signflip", tuple(ATTACK_SCALES))
    scale = c.number(raw, "scale", p, None, minimum=0, exclusive_min=True)
    if scale is not None and attack == "labelflip":
        c.fail(f"{p}.scale", scale, "labelflip takes no scale: its nodes train on flipped labels")
    return Adversaries(count=many, attack=attack, scale=scale)


def _stragglers(c: _Checker, nodes: Mapping, path: str, count: int) -> Stragglers:
    raw = c.section(nodes, "stragglers", path, ("count", "slowdown"))
    p = f"{path}.stragglers"
    many = c.integer(raw, "count", p, 0, minimum=0, maximum=100000)
    if many > count:
        c.fail(f"{p}.count", many, f"is more than nodes.count ({count})")
    return Stragglers(count=many, slowdown=c.number(raw, "slowdown", p, 10.0, minimum=1, maximum=1000))


def _topology(c: _Checker, spec: Mapping, path: str, count: int) -> Topology:
    raw = c.section(spec, "topology", path, ("kind", "degree", "edges", "groups", "mixing"))
    p = f"{path}.topology"
    kind = c.choice(raw, "kind", p, "star", TOPOLOGIES)
    mixing = c.choice(raw, "mixing", p, "metropolis", MIXING)
    degree = c.integer(raw, "degree", p, None, minimum=1)
    groups = c.integer(raw, "groups", p, None, minimum=1)
    edges: tuple[tuple[int, int], ...] = ()
    if kind == "kregular":
        if degree is None:
            c.fail(f"{p}.degree", None, "is required for a kregular topology")
        elif degree >= count:
            c.fail(f"{p}.degree", degree, f"is not below nodes.count ({count})")
        elif (degree * count) % 2:
            c.fail(f"{p}.degree", degree, f"times nodes.count ({count}) must be even for a regular graph")
    if kind in ("ring", "mesh", "kregular", "custom") and count < 2:
        c.fail(f"{path}.nodes.count", count, f"a {kind} topology needs at least 2 nodes")
    if kind == "hierarchical":
        if groups is None:
            c.fail(f"{p}.groups", None, "is required for a hierarchical topology")
        elif groups > count:
            c.fail(f"{p}.groups", groups, f"is more than nodes.count ({count}): a group would be empty")
    if kind == "custom":
        edges = _edges(c, raw.get("edges"), f"{p}.edges", count)
    elif raw.get("edges"):
        c.fail(f"{p}.edges", raw["edges"], "is only used by a custom topology")
    return Topology(kind=kind, degree=degree, edges=edges, groups=groups, mixing=mixing)


def _edges(c: _Checker, value: Any, path: str, count: int) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not value:
        c.fail(path, value, "a custom topology needs a non-empty list of [a, b] node index pairs")
        return ()
    edges = []
    for i, edge in enumerate(value):
        ok = (
            isinstance(edge, list)
            and len(edge) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in edge)
        )
        if not ok:
            c.fail(f"{path}[{i}]", edge, "must be a pair of node indices [a, b]")
        elif not all(0 <= v < count for v in edge):
            c.fail(f"{path}[{i}]", edge, f"node index out of range 0..{count - 1}")
        elif edge[0] == edge[1]:
            c.fail(f"{path}[{i}]", edge, "is a self loop")
        else:
            edges.append((edge[0], edge[1]))
    if len(edges) == len(value):
        # Connectivity is a graph property the schema cannot express; checked here, before any work.
        seen, frontier = {0}, [0]
        adjacency: dict[int, set[int]] = {}
        for a, b in edges:
            adjacency.setdefault(a, set()).add(b)
            adjacency.setdefault(b, set()).add(a)
        while frontier:
            for nxt in adjacency.get(frontier.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        if len(seen) != count:
            missing = sorted(set(range(count)) - seen)
            c.fail(path, value, f"graph is not connected: nodes {missing[:10]} are unreachable from node 0")
    return tuple(edges)


def _algorithm(c: _Checker, spec: Mapping, path: str, count: int) -> Algorithm:
    raw = c.section(spec, "algorithm", path, ("name", "options", "fraction", "minNodes", "targetAccuracy", "privacy"))
    p = f"{path}.algorithm"
    name = c.choice(raw, "name", p, "fedavg", ALGORITHMS)
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        c.fail(f"{p}.options", options, "must be a mapping")
        options = {}
    fraction = c.number(raw, "fraction", p, 1.0, minimum=0, maximum=1, exclusive_min=True)
    min_nodes = c.integer(raw, "minNodes", p, 1, minimum=1)
    if min_nodes > count:
        c.fail(f"{p}.minNodes", min_nodes, f"is more than nodes.count ({count})")
    target = c.number(raw, "targetAccuracy", p, None, minimum=0, maximum=1)
    privacy = None
    if raw.get("privacy") is not None:
        pr = c.section(raw, "privacy", p, ("clip", "noiseMultiplier", "delta"))
        privacy = Privacy(
            clip=c.number(pr, "clip", f"{p}.privacy", 1.0, minimum=0, exclusive_min=True),
            noiseMultiplier=c.number(pr, "noiseMultiplier", f"{p}.privacy", 0.0, minimum=0, exclusive_min=True),
            delta=c.number(pr, "delta", f"{p}.privacy", 1e-5, minimum=0, maximum=1, exclusive_min=True),
        )
    if kind_is_decentralized(spec) and name != "fedavg":
        c.fail(f"{p}.name", name, "is a server-side strategy; decentralised topologies mix with topology.mixing")
    if kind_is_decentralized(spec) and fraction != 1.0:
        c.fail(f"{p}.fraction", fraction, "decentralised topologies train every node each round; use 1.0")
    if privacy is not None and not catalog.CATALOG[name].linear:
        c.fail(f"{p}.privacy", "set", f"needs a linear strategy; {name} must see every raw update")
    if privacy is not None and catalog.CATALOG[name].control_variates:
        c.fail(f"{p}.privacy", "set", f"{name}'s control variates are not clipped or noised; use a model-only strategy")
    if catalog.CATALOG[name].asynchronous:
        topology = spec.get("topology")
        kind = topology.get("kind", "star") if isinstance(topology, Mapping) else "star"
        if kind != "star":
            c.fail(f"{p}.name", name, f"runs asynchronous rounds on a star topology, not {kind}")
        if privacy is not None:
            c.fail(f"{p}.privacy", "set", f"{name}'s updates arrive at no fixed rate, which its accounting assumes")
    if privacy is not None and kind_is_decentralized(spec):
        c.fail(f"{p}.privacy", "set", "applies to server-side rounds (star, hierarchical)")

    for problem in catalog.option_problems(name, options, sampled=max(1, math.ceil(fraction * count))):
        c.problems.append(f"{p}.options.{problem}")
    return Algorithm(
        name=name,
        options=dict(options),
        fraction=fraction,
        minNodes=min_nodes,
        targetAccuracy=target,
        privacy=privacy,
    )


def kind_is_decentralized(spec: Mapping) -> bool:
    topology = spec.get("topology")
    return isinstance(topology, Mapping) and topology.get("kind") in ("ring", "mesh", "kregular", "custom")


def _task(c: _Checker, spec: Mapping, path: str, count: int) -> Task:
    raw = c.section(spec, "task", path, ("dataset", "partition", "model", "train", "seed"))
    p = f"{path}.task"
    ds = c.section(raw, "dataset", p, ("name", "samplesPerNode", "features", "classes", "testFraction", "cache"))
    dp = f"{p}.dataset"
    dataset = Dataset(
        name=c.choice(ds, "name", dp, "digits", DATASETS, allow_import=True),
        samplesPerNode=c.integer(ds, "samplesPerNode", dp, 256, minimum=1, maximum=1_000_000),
        features=c.integer(ds, "features", dp, 32, minimum=1, maximum=100_000),
        classes=c.integer(ds, "classes", dp, 10, minimum=2, maximum=10_000),
        testFraction=c.number(ds, "testFraction", dp, 0.2, minimum=0, maximum=0.9, exclusive_min=True),
        cache=_word(c, ds, "cache", dp, CACHE),
    )
    pt = c.section(raw, "partition", p, ("kind", "alpha", "labels"))
    pp = f"{p}.partition"
    partition = Partition(
        kind=c.choice(pt, "kind", pp, "iid", PARTITIONS),
        alpha=c.number(pt, "alpha", pp, 0.5, minimum=0, exclusive_min=True),
        labels=c.integer(pt, "labels", pp, 2, minimum=1),
    )
    # A user's factory has as many classes as its labels show, known only once data.py loads it.
    classes = {"digits": DIGITS_CLASSES, "synthetic": dataset.classes}.get(dataset.name)
    if partition.kind == "labels" and classes is not None and partition.labels > classes:
        c.fail(f"{pp}.labels", partition.labels, f"is more than the {classes} classes of dataset {dataset.name}")
    md = c.section(raw, "model", p, ("name", "hidden", "channels", "personal", "localNorm"))
    mp = f"{p}.model"
    model = Model(
        name=c.choice(md, "name", mp, "mlp", MODELS, allow_import=True),
        hidden=c.int_list(md, "hidden", mp, (64,)),
        channels=c.int_list(md, "channels", mp, (8, 16)),
        personal=_layer_names(c, md, mp),
        localNorm=c.boolean(md, "localNorm", mp, False),
    )
    if model.name == "cnn" and dataset.name == "synthetic":
        c.fail(f"{mp}.name", "cnn", "needs image data (dataset digits); synthetic data is a flat vector")
    tr = c.section(raw, "train", p, ("epochs", "batchSize", "optimizer", "lr", "momentum", "weightDecay", "vectorize"))
    tp = f"{p}.train"
    train = Train(
        epochs=c.integer(tr, "epochs", tp, 1, minimum=1, maximum=10000),
        batchSize=c.integer(tr, "batchSize", tp, 32, minimum=1),
        optimizer=c.choice(tr, "optimizer", tp, "sgd", OPTIMIZERS),
        lr=c.number(tr, "lr", tp, 0.05, minimum=0, exclusive_min=True),
        momentum=c.number(tr, "momentum", tp, 0.0, minimum=0, maximum=1),
        weightDecay=c.number(tr, "weightDecay", tp, 0.0, minimum=0),
        vectorize=_word(c, tr, "vectorize", tp, VECTORIZE),
    )
    seed = c.integer(raw, "seed", p, 0, minimum=0, maximum=2**31 - 1)
    return Task(dataset=dataset, partition=partition, model=model, train=train, seed=seed)


def _word(c: _Checker, section: Mapping, key: str, path: str, words: tuple[str, ...]) -> str:
    """One of `words` (the first is the default); `on`, `off`, `yes`, `true` are YAML's booleans, unquoted."""
    if isinstance(section.get(key), bool):
        c.fail(f"{path}.{key}", section[key], f"must be one of {', '.join(words)}, not a boolean")
        return words[0]
    return c.choice(section, key, path, words[0], words)


def _layer_names(c: _Checker, model: Mapping, path: str) -> tuple[str, ...]:
    """`personal`: module names as the model's state_dict spells them ("3" for an mlp's output layer);
    that they exist is checked once the model is built (driver.prepare), as only torch can say."""
    value = model.get("personal", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        c.fail(f"{path}.personal", value, "must be a list of layer names, such as ['3'] for an mlp's output layer")
        return ()
    return tuple(value)


def _personalisation(c: _Checker, spec: Mapping, path: str, nodes: Nodes, model: Model) -> None:
    if not model.personalised:
        return
    field, value = ("personal", list(model.personal)) if model.personal else ("localNorm", True)
    where = f"{path}.task.model.{field}"
    if kind_is_decentralized(spec):
        c.fail(where, value, "applies to server-side rounds (star, hierarchical): gossip mixes every layer")
    if "test" not in nodes.roles:
        c.fail(where, value, "needs nodes.role with test: personalised models are judged on each node's own split")


def _communication(c: _Checker, spec: Mapping, path: str, algorithm: Algorithm) -> Communication:
    raw = c.section(spec, "communication", path, ("compression",))
    cp = c.section(raw, "compression", f"{path}.communication", ("kind", "ratio", "bits"))
    p = f"{path}.communication.compression"
    kind = c.choice(cp, "kind", p, "none", COMPRESSIONS)
    for key, owner in (("ratio", "topk"), ("bits", "quantize")):
        if key in cp and kind != owner:
            c.fail(f"{p}.{key}", cp[key], f"belongs to kind {owner}, not {kind}")
    compression = Compression(
        kind=kind,
        ratio=c.number(cp, "ratio", p, 0.1, minimum=0, maximum=1, exclusive_min=True),
        bits=c.integer(cp, "bits", p, 8, minimum=1, maximum=16),
    )
    if kind != "none" and kind_is_decentralized(spec):
        c.fail(f"{p}.kind", kind, "applies to updates sent to a server (star, hierarchical)")
    if kind != "none" and algorithm.privacy is not None:
        c.fail(f"{p}.kind", kind, "cannot be combined with algorithm.privacy: the error fed back is not noised")
    return Communication(compression=compression)


def tracking_uri_problem(uri: object) -> str | None:
    """Why `uri` cannot be a tracking URI, or None: for spec.tracking.mlflow.uri and `red run --mlflow` alike."""
    if not isinstance(uri, str) or not uri:
        return "is required: the MLflow tracking server, such as http://mlflow:5000"
    if not TRACKING_URI.match(uri):
        return "must be the http:// or https:// URL of an MLflow tracking server (start one with `mlflow server`)"
    return None


def _tracking(c: _Checker, spec: Mapping, path: str) -> Tracking:
    raw = c.section(spec, "tracking", path, ("mlflow",))
    if raw.get("mlflow") is None:
        return Tracking()
    p = f"{path}.tracking.mlflow"
    ml = c.section(raw, "mlflow", f"{path}.tracking", ("uri", "experiment"))
    uri = ml.get("uri")
    problem = tracking_uri_problem(uri)
    if problem:
        c.fail(f"{p}.uri", uri, problem)
    experiment = c.string(ml, "experiment", p, "")
    if "experiment" in ml and not experiment.strip():
        c.fail(f"{p}.experiment", experiment, "must not be blank (leave it out for the Federation's name)")
    elif len(experiment) > MAX_EXPERIMENT_LENGTH:
        c.fail(f"{p}.experiment", experiment, f"is longer than MLflow's {MAX_EXPERIMENT_LENGTH} characters")
    return Tracking(mlflow=Mlflow(uri=uri if isinstance(uri, str) else "", experiment=experiment))


def _serve(c: _Checker, spec: Mapping, path: str, ray: RaySpec) -> Serve | None:
    if spec.get("serve") is None:
        return None
    raw = c.section(spec, "serve", path, ("replicas", "cpu", "gpu"))
    p = f"{path}.serve"
    serve = Serve(
        replicas=c.integer(raw, "replicas", p, 1, minimum=1, maximum=1000),
        cpu=c.number(raw, "cpu", p, 1.0, minimum=0, exclusive_min=True),
        gpu=c.number(raw, "gpu", p, 0.0, minimum=0),
    )
    # A GPU is a unit resource to Ray: a share of one, or whole ones (1.5 would never be scheduled).
    if serve.gpu > 1 and serve.gpu != int(serve.gpu):
        c.fail(f"{p}.gpu", serve.gpu, "must be a fraction below 1 or a whole number")
    # The RayService's Pods are the Federation's (spec.ray): a replica that needs GPUs needs a Pod that has them.
    if serve.gpu and not any(g.replicas and g.gpu >= serve.gpu for g in ray.workerGroups):
        c.fail(f"{p}.gpu", serve.gpu, "no worker group of spec.ray.workerGroups has a Pod with that many GPUs")
    return serve


def _checkpoint(c: _Checker, spec: Mapping, path: str) -> Checkpoint:
    raw = c.section(spec, "checkpoint", path, ("every", "path", "keep"))
    p = f"{path}.checkpoint"
    every = c.integer(raw, "every", p, 0, minimum=0)
    where = c.string(raw, "path", p, "")
    keep = c.integer(raw, "keep", p, 3, minimum=1)
    return Checkpoint(every=every, path=where, keep=keep)


def _storage(c: _Checker, spec: Mapping, path: str) -> Storage:
    raw = c.section(spec, "storage", path, ("pvc", "uri", "secretRef", "retain"))
    p = f"{path}.storage"
    uri = c.string(raw, "uri", p, "")
    if uri:
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme != "s3":
            c.fail(f"{p}.uri", uri, f"unknown scheme {scheme or '(none)'!r}; expected s3://bucket/prefix")
        elif not S3_URI.match(uri):
            c.fail(f"{p}.uri", uri, "must be s3://bucket or s3://bucket/prefix, with a valid bucket name")
    claim = None
    if raw.get("pvc") is not None:
        pvc = c.section(raw, "pvc", p, ("claimName", "size", "storageClassName"))
        pp = f"{p}.pvc"
        name = c.string(pvc, "claimName", pp, "")
        if name and (not DNS_SUBDOMAIN.match(name) or len(name) > 253):
            c.fail(f"{pp}.claimName", name, "must be a PersistentVolumeClaim name (a DNS subdomain)")
        if name and ("size" in pvc or "storageClassName" in pvc):
            c.fail(pp, dict(pvc), "give claimName (an existing claim) or size and storageClassName (a new one)")
        size = c.quantity(pvc, "size", pp, Claim.size)
        if not QUANTITY.match(size):
            c.fail(f"{pp}.size", size, 'must be a Kubernetes quantity such as "1Gi"')
        klass = c.string(pvc, "storageClassName", pp, "")
        claim = Claim(claimName=name, size=size, storageClassName=klass)
        if uri:
            c.fail(p, {"pvc": dict(pvc), "uri": uri}, "give pvc or uri, not both")
    ref = c.section(raw, "secretRef", p, ("name",))
    secret = c.string(ref, "name", f"{p}.secretRef", "")
    if secret and not DNS_SUBDOMAIN.match(secret):
        c.fail(f"{p}.secretRef.name", secret, "must be a Secret name (a DNS subdomain)")
    if secret and not uri:
        c.fail(f"{p}.secretRef", dict(ref), "holds object-storage credentials: it needs storage.uri")
    return Storage(pvc=claim, uri=uri, secretRef=secret, retain=c.boolean(raw, "retain", p, True))


def _ray(c: _Checker, spec: Mapping, path: str) -> RaySpec:
    raw = c.section(spec, "ray", path, ("image", "head", "workerGroups", "submissionMode", "runtimeEnv", "keepCluster"))
    p = f"{path}.ray"
    head_raw = c.section(raw, "head", p, ("cpu", "memory", *POD_FIELDS))
    head = HeadGroup(
        cpu=c.quantity(head_raw, "cpu", f"{p}.head", "2"),
        memory=c.quantity(head_raw, "memory", f"{p}.head", "8Gi"),
        **pod_options(c, head_raw, f"{p}.head"),
    )
    groups = []
    raw_groups = raw.get("workerGroups") or []
    if not isinstance(raw_groups, list):
        c.fail(f"{p}.workerGroups", raw_groups, "must be a list")
        raw_groups = []
    elif len(raw_groups) > MAX_WORKER_GROUPS:
        c.fail(f"{p}.workerGroups", f"{len(raw_groups)} groups", f"must be at most {MAX_WORKER_GROUPS}")
        raw_groups = []
    known = ("name", "replicas", "cpu", "gpu", "memory", *POD_FIELDS)
    names = set()
    for i, g in enumerate(raw_groups):
        gp = f"{p}.workerGroups[{i}]"
        if not isinstance(g, Mapping):
            c.fail(gp, g, "must be a mapping")
            continue
        c.unknown(g, gp, known)
        name = c.string(g, "name", gp, "")
        if not DNS_LABEL.match(name) or len(name) > 30:
            c.fail(f"{gp}.name", name, "must be a DNS label of at most 30 characters")
        elif name in names:
            c.fail(f"{gp}.name", name, "is used by two worker groups")
        names.add(name)
        groups.append(
            WorkerGroup(
                name=name,
                replicas=c.integer(g, "replicas", gp, 1, minimum=0, maximum=1000),
                cpu=c.quantity(g, "cpu", gp, "1"),
                gpu=c.integer(g, "gpu", gp, 0, minimum=0, maximum=64),
                memory=c.quantity(g, "memory", gp, "4Gi"),
                **pod_options(c, g, gp),
            )
        )
    runtime_env = raw.get("runtimeEnv") or {}
    if not isinstance(runtime_env, Mapping):
        c.fail(f"{p}.runtimeEnv", runtime_env, "must be a mapping")
        runtime_env = {}
    return RaySpec(
        image=c.string(raw, "image", p, RaySpec.image),
        head=head,
        workerGroups=tuple(groups),
        submissionMode=c.choice(raw, "submissionMode", p, "K8sJobMode", SUBMISSION_MODES),
        runtimeEnv=dict(runtime_env),
        keepCluster=c.boolean(raw, "keepCluster", p, False),
    )


def parse_manifest(doc: Mapping[str, Any], stored: bool = False) -> Federation:
    """Validate a whole Federation object (apiVersion, kind, metadata, spec).

    `stored` for an object read from the API server: fields a newer CRD added are ignored (see _Checker).
    """
    if not isinstance(doc, Mapping):
        raise SpecError([f"manifest: {doc!r}: must be a mapping"])
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: {doc.get('apiVersion')!r}: expected {API_VERSION}")
    if doc.get("kind") != KIND:
        problems.append(f"kind: {doc.get('kind')!r}: expected {KIND}")
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        problems.append(f"metadata.name: {name!r}: must be a lowercase DNS label")
    elif len(name) > MAX_NAME_LENGTH:
        problems.append(
            f"metadata.name: {name!r}: is {len(name)} characters; at most {MAX_NAME_LENGTH} leave room "
            "for the names KubeRay gives the RayCluster's Services"
        )
    spec = None
    try:
        spec = parse_spec(doc.get("spec"), stored=stored)
    except SpecError as err:
        problems.extend(err.problems)
    labels = (meta.get("labels") if isinstance(meta, Mapping) else None) or {}
    queue = labels.get(QUEUE_LABEL, "") if isinstance(labels, Mapping) else ""
    if spec is not None:
        problems.extend(queue_problems(queue, spec))
    if problems:
        raise SpecError(problems)
    return Federation(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        spec=spec,
        uid=str(meta.get("uid") or ""),
        queue=queue,
    )


def queue_problems(queue: Any, spec: FederationSpec) -> list[str]:
    """What keeps Kueue from queueing this Federation, each naming its field: Kueue admits the RayCluster as
    one Workload of at most 8 PodSets, and a priority means something only to a queue."""
    where = f"metadata.labels[{QUEUE_LABEL!r}]"
    if not queue:
        if spec.priorityClassName:
            return [
                f"spec.priorityClassName: {spec.priorityClassName!r}: a Kueue priority needs a queue; "
                f"set {where} to a LocalQueue"
            ]
        return []
    if not isinstance(queue, str) or not DNS_SUBDOMAIN.match(queue):
        return [f"{where}: {queue!r}: must be the name of a Kueue LocalQueue"]
    groups = len(spec.ray.workerGroups)
    if groups > MAX_QUEUED_WORKER_GROUPS:
        return [
            f"spec.ray.workerGroups: {groups} groups: a Federation queued by Kueue ({where}) has at most "
            f"{MAX_QUEUED_WORKER_GROUPS} worker groups, as Kueue admits at most 8 PodSets (the head is one)"
        ]
    return [
        f"spec.ray.workerGroups[{i}].name: 'head': Kueue names the head's PodSet so; pick another name"
        for i, group in enumerate(spec.ray.workerGroups)
        if group.name == "head"
    ]


class _ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping, as kubectl does: otherwise the
    later value wins without a word, and a pasted-in second `count:` silently changes the run."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key, which PyYAML itself reports
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r} (first at line {first + 1}); kubectl refuses it too",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_manifest(path: str) -> Federation:
    """Read the one Federation in a YAML file, as `kubectl apply -f` would take it.

    Every way a file can be unreadable as a manifest (YAML syntax, a duplicate key, not UTF-8, two
    Federations) is a SpecError naming the file and line; a missing file is an OSError.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            docs = [d for d in yaml.load_all(fh, Loader=_ManifestLoader) if d is not None]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = " ".join(filter(None, [err.problem, f"({err.context})" if err.context else ""]))
        raise SpecError([f"{path}: {where}{reason}"]) from None
    except yaml.YAMLError as err:  # the reader's: a character YAML does not allow
        raise SpecError([f"{path}: not YAML: {err}"]) from None
    except UnicodeDecodeError as err:
        raise SpecError([f"{path}: not UTF-8 text: {err}"]) from None
    feds = [d for d in docs if isinstance(d, Mapping) and d.get("kind") == KIND]
    if not feds:
        raise SpecError([f"{path}: no document of kind {KIND} found"])
    if len(feds) > 1:
        raise SpecError(
            [f"{path}: holds {len(feds)} Federation documents; `red run` takes one: put each in a file of its own"]
        )
    return parse_manifest(feds[0])
