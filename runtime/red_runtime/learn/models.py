"""Models by name, and the flat parameter vector that travels between nodes and the server.

A model crosses the object store as one float32 numpy array: zero-copy for readers on the same
machine, and the same layout for every strategy's arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from red_api.spec import Model, SpecError
from red_runtime.learn.references import resolve


def build_model(spec: Model, input_shape: tuple[int, ...], classes: int, seed: int) -> nn.Module:
    """The model named in `spec`, initialised from `seed` so every party starts from the same weights."""
    torch.manual_seed(seed)
    features = math.prod(input_shape)
    if spec.name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
    if spec.name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = features
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, classes))
    if spec.name == "cnn":
        return _cnn(input_shape, classes, spec.channels)
    cls = resolve(spec.name, "spec.task.model.name")
    return cls(input_shape=input_shape, classes=classes)


def _cnn(input_shape: tuple[int, ...], classes: int, channels: tuple[int, ...]) -> nn.Module:
    if len(input_shape) != 3:
        raise SpecError([f"spec.task.model.name: 'cnn': needs image input (C, H, W), got shape {input_shape}"])
    layers: list[nn.Module] = []
    in_ch = input_shape[0]
    for out_ch in channels:
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU()]
        in_ch = out_ch
    layers += [nn.MaxPool2d(2), nn.Flatten()]
    spatial = (input_shape[1] // 2) * (input_shape[2] // 2)
    return nn.Sequential(*layers, nn.Linear(in_ch * spatial, classes))


def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in model.state_dict().values() if t.is_floating_point()]


# Normalisation layers, whose weights and running statistics FedBN keeps local.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Tensor:
    """One named entry of the flat vector: where it lies, its shape, and whether it is a buffer (running
    statistics, which are averaged but never stepped by a server optimiser) or a weight."""

    name: str
    where: slice
    shape: tuple[int, ...]
    buffer: bool


def layout(model: nn.Module) -> tuple[Tensor, ...]:
    """The flat vector's layer map: every float state_dict entry, in order."""
    params = {name for name, _ in model.named_parameters()}
    out, offset = [], 0
    for name, t in model.state_dict().items():
        if t.is_floating_point():
            out.append(Tensor(name, slice(offset, offset + t.numel()), tuple(t.shape), name not in params))
            offset += t.numel()
    return tuple(out)


def _flat_layout(model: nn.Module) -> list[tuple[str, slice]]:
    """Every float state_dict entry with its place in the flat vector."""
    return [(t.name, t.where) for t in layout(model)]


def buffer_indices(tensors: tuple[Tensor, ...]) -> np.ndarray:
    """Indices into the flat vector of the buffers (BatchNorm running means and variances)."""
    parts = [np.arange(t.where.start, t.where.stop) for t in tensors if t.buffer]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def named(flat: np.ndarray, tensors: tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    """The flat vector as named, shaped arrays: a state_dict's float entries."""
    if tensors and tensors[-1].where.stop != flat.size:
        raise ValueError(f"parameter vector has {flat.size} values, the layout {tensors[-1].where.stop}")
    return {t.name: np.asarray(flat[t.where]).reshape(t.shape) for t in tensors}


def flattened(arrays: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Named arrays back into one flat float32 vector, in `names` order (a layout's)."""
    return np.concatenate([np.asarray(arrays[n], dtype=np.float32).reshape(-1) for n in names])


def parameter_slices(model: nn.Module) -> list[tuple[nn.Parameter, slice]]:
    """Each trainable parameter with its place in the flat vector (get_flat's layout, buffers skipped)."""
    tensors = model.state_dict(keep_vars=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return [(tensors[name], where) for name, where in _flat_layout(model) if name in trainable]


def layer_names(model: nn.Module) -> list[str]:
    """Modules that hold weights or buffers, as `task.model.personal` names them ("3", "head.fc")."""
    return [name for name, m in model.named_modules() if name and m.state_dict()]


def local_indices(model: nn.Module, personal: tuple[str, ...], local_norm: bool) -> np.ndarray:
    """Indices into the flat vector of what each node keeps for itself: the `personal` layers (FedPer) and,
    with `local_norm`, every normalisation layer's weights and statistics (FedBN)."""
    prefixes = [f"{name}." for name in personal]
    if local_norm:
        prefixes += [f"{name}." for name, m in model.named_modules() if isinstance(m, NORM_LAYERS)]
    keep = [np.arange(where.start, where.stop) for key, where in _flat_layout(model) if key.startswith(tuple(prefixes))]
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def get_flat(model: nn.Module) -> np.ndarray:
    """Every float parameter and buffer of `model`, concatenated in state_dict order."""
    with torch.no_grad():
        return torch.cat([t.detach().reshape(-1).float().cpu() for t in _float_tensors(model)]).numpy()


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    # A copy: arrays read from the object store are read-only, and torch warns on those.
    vec = torch.tensor(np.asarray(flat, dtype=np.float32))
    offset = 0
    with torch.no_grad():
        for t in _float_tensors(model):
            n = t.numel()
            t.copy_(vec[offset : offset + n].view_as(t))
            offset += n
    if offset != vec.numel():
        raise ValueError(f"parameter vector has {vec.numel()} values, the model {offset}")
