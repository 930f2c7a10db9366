"""The flat parameter vector's layout (SCAFFOLD's gradient correction, layers kept local) and personalisation's spec."""

import numpy as np
import pytest
import torch
from torch import nn

from red_api.spec import Model, SpecError, parse_spec
from red_runtime.engine.driver import check_personal_layers
from red_runtime.learn.models import (
    buffer_indices,
    build_model,
    flattened,
    get_flat,
    layer_names,
    layout,
    local_indices,
    named,
    parameter_slices,
)

pytestmark = pytest.mark.unit


def test_parameter_slices_place_each_weight_where_get_flat_puts_it():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    flat = get_flat(model)
    slices = parameter_slices(model)
    assert len(slices) == 6  # two Linear layers' weight and bias, BatchNorm's weight and bias; no buffers
    for param, where in slices:
        np.testing.assert_array_equal(flat[where], param.detach().reshape(-1).numpy())
    assert sum(where.stop - where.start for _, where in slices) < len(flat)  # running stats are skipped
    assert all(isinstance(p, torch.nn.Parameter) for p, _ in slices)


def test_local_layers_are_the_personal_ones_and_every_normalisation_layer_with_its_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_mean.fill_(7.0)
    flat = get_flat(model)
    personal = local_indices(model, ("3",), local_norm=False)
    head = torch.cat([model[3].weight.reshape(-1), model[3].bias]).detach().numpy()
    np.testing.assert_array_equal(flat[personal], head)
    norm = local_indices(model, (), local_norm=True)
    assert len(norm) == 4 * 4  # weight, bias, running_mean, running_var; num_batches_tracked is no float
    assert (flat[norm] == 7.0).sum() == 4
    assert len(local_indices(model, (), local_norm=False)) == 0
    assert layer_names(model) == ["0", "1", "3"]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"task": {"model": {"personal": "3"}}}, "spec.task.model.personal: '3': must be a list of layer names"),
        ({"task": {"model": {"personal": [""]}}}, "spec.task.model.personal: ['']: must be a list of layer names"),
        ({"task": {"model": {"personal": ["3"]}}}, "spec.task.model.personal: ['3']: needs nodes.role with test"),
        (
            {"nodes": {"role": "train-test"}, "topology": {"kind": "ring"}, "task": {"model": {"localNorm": True}}},
            "spec.task.model.localNorm: True: applies to server-side rounds",
        ),
        ({"task": {"model": {"localNorm": "yes"}}}, "spec.task.model.localNorm: 'yes': must be true or false"),
    ],
)
def test_bad_personalisation_is_refused_naming_the_field(spec, problem):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_a_personal_layer_the_model_lacks_is_named_with_the_layers_it_has():
    model = build_model(Model(hidden=(16,)), (1, 8, 8), 10, 0)
    check_personal_layers(model, ("3",))
    with pytest.raises(SpecError, match=r"spec.task.model.personal\[1\]: 'head': no such layer .*layers: 1, 3"):
        check_personal_layers(model, ("3", "head"))


def test_the_layer_map_names_every_entry_of_the_flat_vector_and_marks_the_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_var.fill_(3.0)
    tensors = layout(model)
    assert [t.name for t in tensors] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "3.weight",
        "3.bias",
    ]
    assert [t.name for t in tensors if t.buffer] == ["1.running_mean", "1.running_var"]
    flat = get_flat(model)
    np.testing.assert_array_equal(flat[buffer_indices(tensors)], [0.0] * 4 + [3.0] * 4)
    state = named(flat, tensors)
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            np.testing.assert_array_equal(state[key], value.numpy())
    np.testing.assert_array_equal(flattened(state, [t.name for t in tensors]), flat)
    with pytest.raises(ValueError, match="has 3 values, the layout 42"):
        named(flat[:3], tensors)
