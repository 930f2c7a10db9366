"""The Federation, declared once: each field's type, default, bounds and description, and the rules across fields.

A manifest is parsed into these frozen dataclasses with defaults filled in (kinds.parse_object walks them).
Every problem is collected with its field path and value, so a user fixes a manifest in one pass instead of
one error at a time. crd.py turns the same declarations into the CRD's schema, so the API server and `red run`
refuse the same Federations; tests/operator/test_crd_agreement.py holds the two together on a real server.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from red_api import catalog, sweep
from red_api.kinds import (
    ABSENT,
    Bool,
    Checker,
    Declared,
    Int,
    Kind,
    ListOf,
    MapOf,
    Num,
    Obj,
    Quantity,
    Rule,
    SpecError,
    Str,
    Word,
    api,
    excerpt,
    parse_object,
)
from red_api.limits import MAX_MANIFEST_BYTES, MAX_NESTING, largest, manifest_size, too_deep
from red_api.names import API_VERSION, DEFAULT_IMAGE, DNS_LABEL, KIND, SUBDOMAIN
from red_api.pod import PodOptions
from red_api.rules import FEDERATION_RULES

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
MAX_NODES = 100_000
# Kueue: the label that queues a Federation, the one that gives its Workload a priority, and what Kueue
# admits of a RayCluster (one PodSet per group: the head and at most seven worker groups).
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
MAX_QUEUED_WORKER_GROUPS = 7
# An S3 bucket (3-63 lowercase letters, digits, dots, hyphens) and an optional prefix.
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
# An MLflow tracking server, a host required. Not file: (MLflow 3 refuses its file store unless told to) nor
# sqlite: (the SQL stores are not in mlflow-skinny, which the runtime image carries): run `mlflow server`.
TRACKING_URI = r"^https?://[^\s/?#]+[^\s]*$"
MAX_EXPERIMENT_LENGTH = 256  # MLflow's SQL stores keep experiment names in a VARCHAR(256)
# The CRD's rules over a group's Pod fields are costed per group: the API server needs a bound.
MAX_WORKER_GROUPS = 16
# scikit-learn's bundled digits are the ten digits 0-9 (tests/unit/test_data_sizes.py checks the data).
DIGITS_CLASSES = 10
CLAIM_SIZE = "1Gi"  # of a claim the operator creates, unless storage.pvc.size says otherwise


def _whole_or_fraction(value: float) -> bool:
    """Ray accepts a fraction below 1 or a whole number, nothing in between (1.5 GPUs is refused)."""
    return value <= 1 or value == int(value)


_FRACTION_REASON = "must be a fraction below 1 or a whole number"


def _fraction_rule(field: str) -> Rule:
    return Rule(
        field,
        _FRACTION_REASON,
        lambda obj, raw: None if _whole_or_fraction(getattr(obj, field)) else (getattr(obj, field), _FRACTION_REASON),
        cel=f"self.{field} <= 1.0 || self.{field} == double(int(self.{field}))",
    )


class Pair(Kind):
    """An undirected edge [a, b] between node indices."""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        ok = isinstance(value, list) and len(value) == 2
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**31 for v in value):
            c.fail(path, value, "must be a pair of node indices [a, b]")
            return None
        return (value[0], value[1])  # within nodes.count: the topology rule says so, naming the count

    def openapi(self) -> dict[str, Any]:
        return {
            "type": "array",
            "minItems": 2,
            "maxItems": 2,
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_NODES},
        }


@dataclass(frozen=True)
class Topology(Declared):
    kind: str = api(Word("star", choices=TOPOLOGIES))
    degree: int | None = api(
        Int(ABSENT, minimum=1, maximum=MAX_NODES, doc="kregular; below nodes.count, and degree * count even.")
    )
    edges: tuple[tuple[int, int], ...] = api(
        ListOf(
            Pair(),
            max_items=10_000,
            default=(),
            doc="custom; undirected [a, b] edges between node indices (the graph must be connected).",
        )
    )
    groups: int | None = api(
        Int(
            ABSENT,
            minimum=1,
            maximum=MAX_NODES,
            doc="hierarchical; number of intermediate aggregators, at most nodes.count.",
        )
    )
    mixing: str = api(Word("metropolis", choices=MIXING))


@dataclass(frozen=True)
class Resources(Declared):
    cpu: float = api(Num(1.0, minimum=0, maximum=1024))
    gpu: float = api(Num(0.0, minimum=0, maximum=64))

    RULES = (
        Rule(
            "",
            "a node actor needs some cpu or gpu",
            lambda r, raw: (dict(raw), "a node actor needs some cpu or gpu") if r.cpu == 0 and r.gpu == 0 else None,
            cel="self.cpu > 0.0 || self.gpu > 0.0",
        ),
        _fraction_rule("cpu"),
        _fraction_rule("gpu"),
    )


@dataclass(frozen=True)
class Adversaries(Declared):
    """Nodes, chosen with the seed, that send poisoned updates: for trying robust strategies."""

    count: int = api(Int(0, minimum=0, maximum=MAX_NODES))
    attack: str = api(Word("signflip", choices=tuple(ATTACK_SCALES)))
    scale: float | None = api(
        Num(
            ABSENT,
            minimum=0,
            exclusive_min=True,
            maximum=1e6,
            doc="the attack's strength: signflip 5, gaussian (noise sd) 1, scale 10 unless set.",
        )
    )

    RULES = (
        Rule(
            "scale",
            "labelflip takes no scale: its nodes train on flipped labels",
            lambda a, raw: (
                (a.scale, "labelflip takes no scale: its nodes train on flipped labels")
                if a.scale is not None and a.attack == "labelflip"
                else None
            ),
            cel="!has(self.scale) || !has(self.attack) || self.attack != 'labelflip'",
        ),
    )


@dataclass(frozen=True)
class Stragglers(Declared):
    """Nodes, chosen with the seed, that train `slowdown` times slower: for trying asynchronous rounds."""

    count: int = api(Int(0, minimum=0, maximum=MAX_NODES))
    slowdown: float = api(Num(10.0, minimum=1, maximum=1000))


def _role_problem(role: str) -> str | None:
    parts = role.split("-")
    if not parts or any(r not in ROLES for r in parts) or len(set(parts)) != len(parts):
        return f"must be roles from {', '.join(ROLES)} joined by '-', each once"
    if "train" not in parts:
        return "must include train: a federation with no training node learns nothing"
    return None


ROLE_NAMES = tuple("-".join(p) for n in range(1, 4) for p in itertools.permutations(ROLES, n) if "train" in p)


class RoleWord(Word):
    """nodes.role: the CRD lists every valid order; the parser says what is wrong with an invalid one."""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if isinstance(value, str) and value not in self.choices and len(value) <= 64:
            c.fail(path, value, _role_problem(value) or "is not a valid role")
            return self.default
        return super().check(c, value, path)


@dataclass(frozen=True)
class Nodes(Declared):
    count: int = api(Int(8, minimum=1, maximum=MAX_NODES))
    role: str = api(
        RoleWord(
            "train-eval",
            choices=ROLE_NAMES,
            doc="roles from train, eval and test joined by '-', each once; train is required.",
        )
    )
    resources: Resources = api(Obj(Resources, doc="Ray resources of one node actor."))
    adversaries: Adversaries = api(
        Obj(Adversaries, doc="simulated attackers, chosen with task.seed, that send poisoned updates.")
    )
    stragglers: Stragglers = api(
        Obj(Stragglers, doc="simulated stragglers, chosen with task.seed, whose training takes slowdown times as long.")
    )

    RULES = (
        Rule(
            "adversaries.count",
            "leaves no honest node of nodes.count",
            lambda n, raw: (
                (n.adversaries.count, f"leaves no honest node of nodes.count ({n.count})")
                if n.adversaries.count >= n.count
                else None
            ),
            cel="!has(self.adversaries) || !has(self.adversaries.count) || self.adversaries.count < self.count",
        ),
        Rule(
            "stragglers.count",
            "is more than nodes.count",
            lambda n, raw: (
                (n.stragglers.count, f"is more than nodes.count ({n.count})") if n.stragglers.count > n.count else None
            ),
            cel="!has(self.stragglers) || !has(self.stragglers.count) || self.stragglers.count <= self.count",
        ),
    )

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.role.split("-"))


@dataclass(frozen=True)
class Placement(Declared):
    strategy: str = api(Word("PACK", choices=PLACEMENT_STRATEGIES))


@dataclass(frozen=True)
class Privacy(Declared):
    clip: float = api(Num(1.0, minimum=0, exclusive_min=True, maximum=1e6))
    noiseMultiplier: float = api(
        Num(
            ABSENT,
            minimum=0,
            exclusive_min=True,
            maximum=1e6,
            doc="Gaussian noise per round, in units of clip; without noise there is no privacy.",
        )
    )
    delta: float = api(Num(1e-5, minimum=0, exclusive_min=True, maximum=1))


class OptionValue(Kind):
    """A strategy option's value as the map holds it: a number or a word; catalog.option_problems says which."""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 64):
            return value
        c.fail(path, value, "must be a number or a word")
        return None


class StrategyOptions(MapOf):
    """algorithm.options: typed in the CRD from the catalog; each strategy's own options are the spec's rule."""

    ENTRY = ".{}"  # the CRD declares each option a property

    def openapi(self) -> dict[str, Any]:
        return catalog.options_openapi()


@dataclass(frozen=True)
class Algorithm(Declared):
    name: str = api(Word("fedavg", choices=ALGORITHMS))
    options: Mapping[str, Any] = api(StrategyOptions(value=OptionValue(), max_properties=16, max_key_length=64))
    fraction: float = api(Num(1.0, minimum=0, maximum=1, exclusive_min=True))
    minNodes: int = api(Int(1, minimum=1, maximum=MAX_NODES))
    targetAccuracy: float | None = api(Num(ABSENT, minimum=0, maximum=1))
    privacy: Privacy | None = api(Obj(Privacy, default=None, required=("noiseMultiplier",)))


# The CRD's per-option rules: an option is set only for a strategy that takes it.
Algorithm.EXTRA_CEL = tuple(catalog.option_cel())


@dataclass(frozen=True)
class Dataset(Declared):
    name: str = api(
        Word("digits", choices=DATASETS, imports=True, doc='digits, synthetic, or "package.module:factory".')
    )
    samplesPerNode: int = api(Int(256, minimum=1, maximum=1_000_000))
    features: int = api(Int(32, minimum=1, maximum=100_000))
    classes: int = api(Int(10, minimum=2, maximum=10_000))
    testFraction: float = api(Num(0.2, minimum=0, maximum=0.9, exclusive_min=True))
    cache: str = api(
        Word(
            "auto",
            choices=CACHE,
            words=True,
            doc="hold generated (synthetic) node data between rounds (always), make it again from the seed each "
            "time (never), or hold it where an actor's nodes take at most 1 GiB (auto).",
        )
    )


@dataclass(frozen=True)
class Partition(Declared):
    kind: str = api(Word("iid", choices=PARTITIONS))
    alpha: float = api(Num(0.5, minimum=0, exclusive_min=True, maximum=1e6))
    labels: int = api(Int(2, minimum=1, maximum=10_000))


def _layers(default: tuple[int, ...], maximum: int, items: int) -> ListOf:
    return ListOf(
        Int(minimum=1, maximum=maximum),
        max_items=items,
        default=default,
        reason=f"must be a list of at most {items} integers from 1 to {maximum}",
    )


@dataclass(frozen=True)
class Model(Declared):
    name: str = api(Word("mlp", choices=MODELS, imports=True, doc='logreg, mlp, cnn, or "package.module:Class".'))
    hidden: tuple[int, ...] = api(_layers((64,), 65_536, 16))
    channels: tuple[int, ...] = api(_layers((8, 16), 4_096, 8))
    personal: tuple[str, ...] = api(
        ListOf(
            Str(max_length=253, min_length=1, pattern=r".*\S.*"),
            max_items=64,
            default=(),
            reason="must be a list of layer names, such as ['3'] for an mlp's output layer",
            doc="layers each node keeps for itself (FedPer), as the model's state_dict names them (\"3\" is an mlp's "
            "output layer); needs nodes.role with test.",
        )
    )
    localNorm: bool = api(
        Bool(
            False,
            doc="normalisation layers' weights and running statistics stay local to each node (FedBN).",
        )
    )

    @property
    def personalised(self) -> bool:
        return bool(self.personal) or self.localNorm


@dataclass(frozen=True)
class Train(Declared):
    epochs: int = api(Int(1, minimum=1, maximum=10_000))
    batchSize: int = api(Int(32, minimum=1, maximum=1_000_000))
    optimizer: str = api(Word("sgd", choices=OPTIMIZERS))
    # At most what float32 holds with room to spare: 1e300 was accepted; a huge but finite rate is how a run is
    # made to diverge on purpose (faultTolerance.divergence).
    lr: float = api(Num(0.05, minimum=0, exclusive_min=True, maximum=1e30))
    momentum: float = api(Num(0.0, minimum=0, maximum=1))
    weightDecay: float = api(Num(0.0, minimum=0, maximum=1000))
    vectorize: str = api(
        Word(
            "auto",
            choices=VECTORIZE,
            words=True,
            doc="train the nodes an actor hosts in one batched computation (auto, where it pays off), or always, "
            "or never.",
        )
    )


def _labels_rule(t: Task, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    # A user's factory has as many classes as its labels show, known only once data.py loads it.
    classes = {"digits": DIGITS_CLASSES, "synthetic": t.dataset.classes}.get(t.dataset.name)
    if t.partition.kind == "labels" and classes is not None and t.partition.labels > classes:
        return t.partition.labels, f"is more than the {classes} classes of dataset {t.dataset.name}"
    return None


@dataclass(frozen=True)
class Task(Declared):
    dataset: Dataset = api(Obj(Dataset))
    partition: Partition = api(Obj(Partition))
    model: Model = api(Obj(Model))
    train: Train = api(Obj(Train))
    seed: int = api(Int(0, minimum=0, maximum=2**31 - 1))

    RULES = (
        Rule(
            "model.name",
            "cnn needs image data (dataset digits); synthetic data is a flat vector",
            lambda t, raw: (
                ("cnn", "needs image data (dataset digits); synthetic data is a flat vector")
                if t.model.name == "cnn" and t.dataset.name == "synthetic"
                else None
            ),
            cel="!has(self.model) || !has(self.dataset) || !(self.model.name == 'cnn' && self.dataset.name == "
            "'synthetic')",
        ),
        Rule(
            "partition.labels",
            "is more than the classes of the dataset",
            _labels_rule,
            cel=f"self.partition.kind != 'labels' || (self.dataset.name == 'digits' ? self.partition.labels <= "
            f"{DIGITS_CLASSES} : self.dataset.name != 'synthetic' || self.partition.labels <= self.dataset.classes)",
        ),
    )


@dataclass(frozen=True)
class Checkpoint(Declared):
    every: int = api(Int(0, minimum=0, maximum=100_000, doc="rounds between checkpoints; 0 turns checkpoints off."))
    path: str = api(
        Str(
            "",
            max_length=1024,
            # Segments that start with a letter, digit or "_": no "..", no absolute path, no empty part.
            pattern=r"^$|^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$",
            reason="must be a folder inside the run folder, such as checkpoints-fast or ckpt/digits "
            "(no '..', no leading '/')",
            doc="the checkpoints' folder inside the run folder (default checkpoints), so on the Federation's storage.",
        )
    )
    keep: int = api(Int(3, minimum=1, maximum=1000))


@dataclass(frozen=True)
class Claim(Declared):
    """A PersistentVolumeClaim: an existing one (claimName), else one the operator creates (size, class)."""

    claimName: str = api(
        Str(
            "",
            max_length=253,
            pattern=f"^$|{SUBDOMAIN.pattern}",
            reason="must be a PersistentVolumeClaim name (a DNS subdomain)",
            doc="an existing claim in the Federation's namespace.",
        )
    )
    # No default in the schema: a size given beside claimName is refused, and the API server would fill it in.
    size: str = api(
        Quantity(
            CLAIM_SIZE,
            maximum="1Pi",
            schema_default=False,
            doc=f"the size of the claim the operator creates (default {CLAIM_SIZE}).",
        )
    )
    storageClassName: str = api(Str("", max_length=253, doc="its StorageClass; empty for the cluster's default."))

    RULES = (
        Rule(
            "",
            "spec.storage.pvc: give claimName (an existing claim) or size and storageClassName (a new one)",
            lambda claim, raw: (
                (dict(raw), "give claimName (an existing claim) or size and storageClassName (a new one)")
                if claim.claimName and ("size" in raw or "storageClassName" in raw)
                else None
            ),
            cel="!has(self.claimName) || self.claimName == '' || (!has(self.size) && !has(self.storageClassName))",
        ),
    )


@dataclass(frozen=True)
class SecretRef(Declared):
    name: str = api(
        Str("", max_length=253, pattern=SUBDOMAIN.pattern, reason="must be a Secret name (a DNS subdomain)")
    )


class NameOf(Obj):
    """A {name: ...} reference, kept as the name ("" when unset)."""

    def unset(self) -> Any:
        return ""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        ref = super().check(c, value, path)
        return ref.name if ref else ""


def _uri_problem(uri: str) -> str | None:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme != "s3":
        return f"unknown scheme {scheme or '(none)'!r}; expected s3://bucket/prefix"
    if not re.fullmatch(S3_URI, uri):
        return "must be s3://bucket or s3://bucket/prefix, with a valid bucket name"
    return None


@dataclass(frozen=True)
class Storage(Declared):
    """Where a Federation keeps checkpoints and artifacts: a folder `<name>/` on a claim, or under an
    s3:// prefix. Neither given: a claim of its own (Claim defaults)."""

    pvc: Claim | None = api(Obj(Claim, default=None))
    uri: str = api(
        Str(
            "",
            max_length=1024,
            pattern=f"^$|{S3_URI}",
            problem=lambda u: _uri_problem(u) if u else None,
            doc="s3://bucket/prefix for object storage.",
        )
    )
    secretRef: str = api(
        NameOf(
            SecretRef,
            default=None,
            required=("name",),
            doc="a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL.",
        )
    )
    retain: bool = api(Bool(True, doc="keep a claim the operator created when the Federation is deleted."))

    RULES = (
        Rule(
            "",
            "give pvc or uri, not both",
            lambda s, raw: (
                ({"pvc": dict(raw["pvc"]), "uri": s.uri}, "give pvc or uri, not both")
                if s.pvc is not None and s.uri
                else None
            ),
            cel="!has(self.pvc) || !has(self.uri) || self.uri == ''",
        ),
        Rule(
            "secretRef",
            "holds object-storage credentials: it needs storage.uri",
            lambda s, raw: (
                (dict(raw["secretRef"]), "holds object-storage credentials: it needs storage.uri")
                if s.secretRef and not s.uri
                else None
            ),
            cel="!has(self.secretRef) || (has(self.uri) && self.uri != '')",
        ),
    )

    @property
    def claim(self) -> Claim:
        return self.pvc or Claim()


@dataclass(frozen=True)
class FaultTolerance(Declared):
    maxNodeRestarts: int = api(Int(3, minimum=0, maximum=1000))
    roundTimeoutSeconds: float = api(Num(600.0, minimum=0, exclusive_min=True, maximum=86400))
    maxJobRetries: int = api(
        Int(0, minimum=0, maximum=100, doc="the operator starts a new RayJob this many times after a failed one.")
    )
    divergence: str = api(
        Word(
            "fail",
            choices=DIVERGENCE,
            doc="a NaN or infinite global loss fails the run with reason Diverged, or the run continues.",
        )
    )


def _quantities(cpu: str, memory: str) -> tuple[Quantity, Quantity]:
    return Quantity(cpu, maximum="1024"), Quantity(memory, maximum="64Ti")


@dataclass(frozen=True, kw_only=True)
class HeadGroup(PodOptions):
    cpu: str = api(_quantities("2", "8Gi")[0])
    memory: str = api(_quantities("2", "8Gi")[1])


@dataclass(frozen=True, kw_only=True)
class WorkerGroup(PodOptions):
    name: str = api(
        Str(
            "",
            max_length=30,
            pattern=DNS_LABEL.pattern,
            reason="must be a DNS label of at most 30 characters",
        )
    )
    replicas: int = api(Int(1, minimum=0, maximum=1000))
    cpu: str = api(_quantities("1", "4Gi")[0])
    gpu: int = api(Int(0, minimum=0, maximum=64))
    memory: str = api(_quantities("1", "4Gi")[1])


ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


@dataclass(frozen=True)
class RuntimeEnvConfig(Declared):
    """Ray's RuntimeEnvConfig: how long setting the environment up may take, and whether it is set up at once."""

    setup_timeout_seconds: int | None = api(Int(ABSENT, minimum=-1, maximum=86_400))
    eager_install: bool | None = api(Bool(ABSENT))


@dataclass(frozen=True)
class RuntimeEnv(Declared):
    """The fields of Ray's runtime_env that make sense for a driver on a RayCluster, each bounded."""

    env_vars: Mapping[str, str] = api(
        MapOf(
            value=Str(max_length=32_768),
            max_properties=128,
            max_key_length=253,
            key=lambda k: None if re.fullmatch(ENV_NAME, k) else "is not an environment variable name",
            key_cel=f"self.all(k, k.matches(r'{ENV_NAME}'))",
            key_message="keys must be environment variable names",
            doc="environment variables of the driver and its actors.",
        )
    )
    pip: tuple[str, ...] = api(ListOf(Str(max_length=512), max_items=256, default=ABSENT, doc="pip requirements."))
    working_dir: str = api(Str(ABSENT, max_length=2048, doc="a URI of a zip file with the job's code."))
    py_modules: tuple[str, ...] = api(ListOf(Str(max_length=2048), max_items=64, default=ABSENT))
    excludes: tuple[str, ...] = api(ListOf(Str(max_length=1024), max_items=256, default=ABSENT))
    uv: tuple[str, ...] = api(ListOf(Str(max_length=512), max_items=256, default=ABSENT, doc="uv requirements."))
    conda: str = api(Str(ABSENT, max_length=253, doc="the name of an existing conda environment."))
    image_uri: str = api(Str(ABSENT, max_length=512, doc="a container image for the job's workers."))
    config: RuntimeEnvConfig | None = api(Obj(RuntimeEnvConfig, default=None, plain=True))


@dataclass(frozen=True)
class RaySpec(Declared):
    image: str = api(Str(DEFAULT_IMAGE, max_length=512))
    head: HeadGroup = api(Obj(HeadGroup))
    workerGroups: tuple[WorkerGroup, ...] = api(
        ListOf(
            Obj(WorkerGroup, required=("name",)),
            max_items=MAX_WORKER_GROUPS,
            default=(),
            list_type="map",
            map_keys=("name",),
            unique="name",
            duplicate="is used by two worker groups",
        )
    )
    submissionMode: str = api(Word("K8sJobMode", choices=SUBMISSION_MODES))
    runtimeEnv: Mapping[str, Any] = api(Obj(RuntimeEnv, plain=True, doc="Ray's runtime_env for the driver."))
    keepCluster: bool = api(Bool(False))


@dataclass(frozen=True)
class Compression(Declared):
    kind: str = api(Word("none", choices=COMPRESSIONS))
    ratio: float = api(
        Num(ABSENT, minimum=0, maximum=1, exclusive_min=True, doc="topk, the share of entries sent (0.1 unless set).")
    )
    bits: int = api(Int(ABSENT, minimum=1, maximum=16, doc="quantize, bits per entry (8 unless set)."))

    RULES = (
        Rule(
            "ratio",
            "belongs to kind topk",
            lambda cp, raw: (
                (raw["ratio"], f"belongs to kind topk, not {cp.kind}") if "ratio" in raw and cp.kind != "topk" else None
            ),
            cel="!has(self.ratio) || self.kind == 'topk'",
        ),
        Rule(
            "bits",
            "belongs to kind quantize",
            lambda cp, raw: (
                (raw["bits"], f"belongs to kind quantize, not {cp.kind}")
                if "bits" in raw and cp.kind != "quantize"
                else None
            ),
            cel="!has(self.bits) || self.kind == 'quantize'",
        ),
    )


@dataclass(frozen=True)
class Communication(Declared):
    compression: Compression = api(
        Obj(
            Compression,
            doc="how nodes compress the change they send the server, with error feedback; star and hierarchical.",
        )
    )


def tracking_uri_problem(uri: object) -> str | None:
    """Why `uri` cannot be a tracking URI, or None: for spec.tracking.mlflow.uri and `red run --mlflow` alike."""
    if not isinstance(uri, str) or not uri:
        return "is required: the MLflow tracking server, such as http://mlflow:5000"
    if not re.fullmatch(TRACKING_URI, uri):
        return "must be the http:// or https:// URL of an MLflow tracking server (start one with `mlflow server`)"
    return None


@dataclass(frozen=True)
class Mlflow(Declared):
    """An MLflow tracking server that gets one run per federation run."""

    uri: str = api(
        Str(
            "",
            max_length=2048,
            pattern=TRACKING_URI,
            problem=tracking_uri_problem,
            doc="the MLflow tracking server, such as http://mlflow:5000",
        )
    )
    experiment: str = api(
        Str(
            "",
            max_length=MAX_EXPERIMENT_LENGTH,
            pattern=r"^$|.*\S.*",
            problem=lambda e: "must not be blank (leave it out for the Federation's name)" if not e.strip() else None,
            doc="the MLflow experiment (default the Federation's name).",
        )
    )

    def experiment_for(self, name: str) -> str:
        return self.experiment or name


@dataclass(frozen=True)
class Tracking(Declared):
    mlflow: Mlflow | None = api(
        Obj(
            Mlflow,
            default=None,
            required=("uri",),
            doc="An MLflow tracking server that gets one run per federation run: the spec as params, per-round "
            "metrics, and model.pt, metrics.png, nodes.json, summary.json and federation.yaml as artifacts.",
        )
    )


@dataclass(frozen=True)
class Serve(Declared):
    """The finished model behind a Ray Serve endpoint (a KubeRay RayService); what each replica asks Ray for."""

    replicas: int = api(Int(1, minimum=1, maximum=1000, doc="Serve replicas of the model."))
    cpu: float = api(Num(1.0, minimum=0, exclusive_min=True, maximum=1024, doc="Ray CPUs of one replica."))
    gpu: float = api(
        Num(0.0, minimum=0, maximum=64, doc="Ray GPUs of one replica; a worker group must have Pods with as many.")
    )

    RULES = (_fraction_rule("gpu"),)


class SweepKind(Kind):
    """spec.sweep: sweep.py parses it (as it parses `red tune`'s flags) and says its schema."""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT or value is None:
            return None
        try:
            return sweep.sweep_from_spec(value, path)
        except ValueError as err:
            c.problems.append(str(err))
            return None

    def openapi(self) -> dict[str, Any]:
        return sweep.openapi()


@dataclass(frozen=True)
class FederationSpec(Declared):
    rounds: int = api(Int(10, minimum=1, maximum=100_000))
    topology: Topology = api(Obj(Topology))
    nodes: Nodes = api(Obj(Nodes))
    placement: Placement = api(Obj(Placement))
    algorithm: Algorithm = api(Obj(Algorithm))
    task: Task = api(Obj(Task))
    checkpoint: Checkpoint = api(Obj(Checkpoint))
    faultTolerance: FaultTolerance = api(Obj(FaultTolerance))
    ray: RaySpec = api(Obj(RaySpec))
    storage: Storage = api(Obj(Storage))
    suspend: bool = api(
        Bool(
            False,
            doc="true stops the driver after its current round with a checkpoint, then removes the RayJob and "
            "RayCluster and keeps the Federation; false brings them back, resuming after that checkpoint.",
        )
    )
    communication: Communication = api(Obj(Communication))
    # A red_api.sweep.Sweep: the driver runs a Ray Tune sweep of this spec instead.
    sweep: Any = api(SweepKind(default=ABSENT))
    tracking: Tracking = api(
        Obj(
            Tracking,
            doc="where runs are tracked besides the run folder (which always holds TensorBoard event files).",
        )
    )
    serve: Serve | None = api(
        Obj(
            Serve,
            default=None,
            doc="Serve the finished model with Ray Serve: once the Federation has Succeeded the operator creates a "
            "KubeRay RayService, on Pods shaped as spec.ray, that loads the model from the Federation's storage. "
            "Absent: nothing is served. Changing it retrains nothing.",
        )
    )
    priorityClassName: str = api(
        Str(
            "",
            max_length=253,
            pattern=f"^$|{SUBDOMAIN.pattern}",
            reason="must be the name of a Kueue WorkloadPriorityClass",
            doc="a Kueue WorkloadPriorityClass for a queued Federation (label kueue.x-k8s.io/queue-name); a higher "
            "one may preempt a lower one, which resumes from its checkpoint when readmitted.",
        )
    )

    RULES = FEDERATION_RULES


@dataclass(frozen=True)
class Federation:
    name: str
    namespace: str
    spec: FederationSpec
    uid: str = ""
    queue: str = ""  # the Kueue LocalQueue (metadata.labels[QUEUE_LABEL]); "": not queued


def parse_spec(spec: Mapping[str, Any] | None, path: str = "spec", stored: bool = False) -> FederationSpec:
    """Validate a Federation's `spec` mapping and return it with defaults filled in (`stored`: see Checker)."""
    c = Checker(stored)
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise SpecError([f"{path}: {excerpt(spec)}: must be a mapping"])
    parsed = parse_object(c, FederationSpec, spec, path)
    a = parsed.algorithm
    sampled = max(1, math.ceil(a.fraction * parsed.nodes.count))
    raw_algorithm = spec.get("algorithm") if isinstance(spec.get("algorithm"), Mapping) else {}
    options = raw_algorithm.get("options")
    if options is None or isinstance(options, Mapping):  # a non-mapping is reported already
        c.problems.extend(f"{path}.algorithm.options.{p}" for p in catalog.option_problems(a.name, a.options, sampled))
    if c.problems:
        raise SpecError(c.problems)
    return parsed


def parse_manifest(doc: Mapping[str, Any], stored: bool = False) -> Federation:
    """Validate a whole Federation object (apiVersion, kind, metadata, spec).

    `stored` for an object read from the API server: fields a newer CRD added are ignored (see Checker), and
    metadata that Red does not read (annotations, managedFields) does not count towards the size limit.
    """
    if not isinstance(doc, Mapping):
        raise SpecError([f"manifest: {excerpt(doc)}: must be a mapping"])
    meta = doc.get("metadata") or {}
    if not isinstance(meta, Mapping):  # reported as its missing name
        meta = {}
    measured = {"spec": doc.get("spec"), "metadata": {"labels": meta.get("labels")} if stored else meta}
    deep = too_deep(measured)
    if deep is not None:
        raise SpecError([f"{deep}: (a nested value): is nested more than {MAX_NESTING} levels deep"])
    size = manifest_size(measured) if isinstance(meta, Mapping) else 0
    if size is None:
        raise SpecError(["manifest: the document: cannot be read as JSON (a key that is not text)"])
    if size > MAX_MANIFEST_BYTES:
        where, biggest = largest(measured)
        raise SpecError(
            [
                f"{where}: {biggest} bytes: makes the manifest {size} bytes as JSON; a Federation is at most "
                f"{MAX_MANIFEST_BYTES}"
            ]
        )
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: {excerpt(doc.get('apiVersion'))}: expected {API_VERSION}")
    if doc.get("kind") != KIND:
        problems.append(f"kind: {excerpt(doc.get('kind'))}: expected {KIND}")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or len(name) > 253 or not DNS_LABEL.match(name):
        problems.append(f"metadata.name: {excerpt(name)}: must be a lowercase DNS label")
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
    if not isinstance(queue, str) or len(queue) > 253 or not SUBDOMAIN.match(queue):
        return [f"{where}: {excerpt(queue)}: must be the name of a Kueue LocalQueue"]
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
