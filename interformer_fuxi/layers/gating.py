"""Self-gating of summary tokens (Eqs. 10, 11)."""
import torch
from torch import nn

GATING_FORMS = ("paper", "highway")
GATING_ACTIVATIONS = ("sigmoid", "tanh", "identity")


class Gating(nn.Module):
    r"""Token-wise gating with a per-token ``MLP = Linear(d, d)``.

    * ``form="paper"``: ``sigma(X * MLP(X))`` as the paper writes it, ``sigma`` in
      {sigmoid, tanh, identity}.
    * ``form="highway"``: ``X * sigmoid(MLP(X))`` (Chai et al. 2020); ``activation`` is
      not used by this form.
    * ``enabled=False``: identity with no parameters (the "without gating" ablation).

    Args:
        embedding_dim (int): ``d``.
        form (str): "paper" or "highway".
        activation (str): "sigmoid", "tanh" or "identity" (paper form only).
        enabled (bool): ``False`` makes the module an identity.

    Shapes:
        X: ``[B, m, d]`` -> ``[B, m, d]``.

    Example::

        >>> gate = Gating(embedding_dim=8, form="highway")
        >>> gate(torch.randn(4, 3, 8)).shape
        torch.Size([4, 3, 8])
    """

    def __init__(self, embedding_dim: int, form: str = "paper",
                 activation: str = "sigmoid", enabled: bool = True) -> None:
        super().__init__()
        if form not in GATING_FORMS:
            raise ValueError(f"unknown gating form {form!r}; expected one of {GATING_FORMS}")
        if activation not in GATING_ACTIVATIONS:
            raise ValueError(
                f"unknown gating activation {activation!r}; expected one of {GATING_ACTIVATIONS}"
            )
        self.form = form
        self.activation = activation
        self.enabled = enabled
        self.mlp = nn.Linear(embedding_dim, embedding_dim) if enabled else None

    def _sigma(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "sigmoid":
            return torch.sigmoid(x)
        if self.activation == "tanh":
            return torch.tanh(x)
        return x

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return X
        if self.form == "highway":
            return X * torch.sigmoid(self.mlp(X))
        return self._sigma(X * self.mlp(X))

    def extra_repr(self) -> str:
        return f"form={self.form!r}, activation={self.activation!r}, enabled={self.enabled}"
