"""DCNv2's full network (Wang et al. 2021): cross network and deep network to one logit.

Shared by the DCNv2 baseline (on flattened feature tokens) and TransAct (whose paper puts a
DCNv2 on top of the sequence summary and the other features).
"""
import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn

from .cross_net import CrossNetV2

STRUCTURES = ("parallel", "stacked", "crossnet_only")


class DCNv2Net(nn.Module):
    r"""``x0 -> logit``:

    - ``parallel``: ``Linear([CrossNet(x0) ‖ MLP(x0)])``
    - ``stacked``: ``Linear(MLP(CrossNet(x0)))``
    - ``crossnet_only``: ``Linear(CrossNet(x0))``

    Args:
        input_dim (int): ``D``.
        model_structure (str): one of ``parallel``, ``stacked``, ``crossnet_only``.
        num_cross_layers (int): cross layers.
        low_rank (int | None): rank of the cross layers; 0 or None for full rank.
        parallel_dnn_hidden_units (list): deep network beside the cross network.
        stacked_dnn_hidden_units (list): deep network after the cross network.
        hidden_activations (str): activation of the deep network.
        net_dropout (float): dropout of the deep network.

    Shapes:
        x0 ``[B, D]`` -> logits ``[B, 1]``.

    Example::

        >>> DCNv2Net(12, "stacked", 2, 4, stacked_dnn_hidden_units=[8])(torch.randn(3, 12)).shape
        torch.Size([3, 1])
    """

    def __init__(self, input_dim, model_structure="parallel", num_cross_layers=3, low_rank=32,
                 parallel_dnn_hidden_units=(512, 512), stacked_dnn_hidden_units=(500, 500),
                 hidden_activations="ReLU", net_dropout=0.0):
        super().__init__()
        if model_structure not in STRUCTURES:
            raise ValueError(f"model_structure must be one of {', '.join(STRUCTURES)}, got {model_structure!r}")
        self.structure = model_structure
        self.cross_net = CrossNetV2(input_dim, num_cross_layers, low_rank)
        self.dnn, out_dim = None, input_dim
        if model_structure != "crossnet_only":
            units = list(parallel_dnn_hidden_units if model_structure == "parallel" else stacked_dnn_hidden_units)
            if not units:
                raise ValueError(f"model_structure {model_structure} needs {model_structure}_dnn_hidden_units")
            self.dnn = MLP_Block(input_dim, units, hidden_activations, dropout_rates=net_dropout)
            out_dim = units[-1] + (input_dim if model_structure == "parallel" else 0)
        self.fc = nn.Linear(out_dim, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        cross = self.cross_net(x0)
        if self.structure == "parallel":
            out = torch.cat([cross, self.dnn(x0)], dim=-1)
        elif self.structure == "stacked":
            out = self.dnn(cross)
        else:
            out = cross
        return self.fc(out)
