"""Activation modules by name, as configs spell them (``SiLU``, ``Swish``, ``ReLU``, ...)."""
from typing import Union

from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: Union[str, nn.Module]) -> nn.Module:
    """A fresh activation module by (case-insensitive) name; Swish is SiLU."""
    if isinstance(name, nn.Module):
        return name
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unknown hidden_activations {name!r}; expected one of {sorted(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[key]()
