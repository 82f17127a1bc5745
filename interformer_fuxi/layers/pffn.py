"""Personalized FFN (appendix A.2, Eq. 8): a per-sample d x d weight made from X_sum."""
import math
from typing import Optional

import torch
from torch import nn

PFFN_FORMS = ("linear", "mlp")
# E[silu(z)^2] for z ~ N(0, 1): rescales the MLP form's last layer at init.
_SILU_SECOND_MOMENT = 0.3559


class PFFN(nn.Module):
    r"""Applies ``S @ W_pffn`` with ``W_pffn = f(X_sum)`` in ``R^{B x d x d}``.

    * ``form="linear"`` (appendix A.2): ``f(X_sum) = X_sum^T W`` with ``W in R^{n_sum x d}``,
      i.e. ``W_pffn[b, i, j] = sum_m X_sum[b, m, i] W[m, j]``.
    * ``form="mlp"`` (main text): ``f = MLP(flatten(X_sum))`` with one SiLU hidden layer of
      ``hidden_dim`` units and a ``d*d`` output reshaped to ``d x d``.
    * ``personalized=False`` (``s2n`` mode): a plain learned ``W in R^{d x d}``; ``X_sum``
      is ignored and may be None.

    The linear form's ``W_pffn`` has rank ``n_sum`` at most, so with ``low_rank_product``
    (default) and ``2 n_sum < d`` the product runs as ``(S X_sum^T) W``: ``2 n_sum / d`` of
    the FLOPs of ``S (X_sum^T W)`` per token (an eighth at ``n_sum = 4``, ``d = 64``), the
    same result up to float rounding. The other forms are one batched matmul over the whole
    sequence.

    Initialisation keeps ``E[y^2] ~ E[s^2]`` when ``X_sum`` has unit second moment (as
    after a norm): linear form ``W ~ N(0, 1/(n_sum d))``; MLP form first layer
    ``N(0, 1/fan_in)``, last layer ``N(0, 1/(0.356 hidden d))`` (0.356 = ``E[silu(z)^2]``),
    zero biases; plain form ``W ~ N(0, 1/d)``.

    Args:
        embedding_dim (int): ``d``.
        num_summary_tokens (int): ``n_sum`` (unused when ``personalized=False``).
        form (str): "linear" or "mlp".
        personalized (bool): build ``W_pffn`` from ``X_sum`` (True) or learn one ``W``.
        hidden_dim (int | None): hidden units of the MLP form (default ``d``).

    Shapes:
        X_sum: ``[B, n_sum, d]`` (or None if not personalized), S: ``[B, N, d]``
        -> ``[B, N, d]``.

    Example::

        >>> pffn = PFFN(embedding_dim=8, num_summary_tokens=4)
        >>> pffn(torch.randn(2, 4, 8), torch.randn(2, 10, 8)).shape
        torch.Size([2, 10, 8])
    """

    def __init__(self, embedding_dim: int, num_summary_tokens: int, form: str = "linear",
                 personalized: bool = True, hidden_dim: Optional[int] = None) -> None:
        super().__init__()
        if form not in PFFN_FORMS:
            raise ValueError(f"unknown PFFN form {form!r}; expected one of {PFFN_FORMS}")
        if personalized and num_summary_tokens < 1:
            raise ValueError(
                f"a personalized PFFN needs num_summary_tokens >= 1, got {num_summary_tokens}"
            )
        d = embedding_dim
        self.embedding_dim = d
        self.num_summary_tokens = num_summary_tokens
        self.form = form
        self.personalized = personalized
        self.weight = None
        self.mlp = None
        self.low_rank_product = True
        if not personalized:
            self.weight = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        elif form == "linear":
            self.weight = nn.Parameter(torch.randn(num_summary_tokens, d)
                                       / math.sqrt(num_summary_tokens * d))
        else:
            hidden = hidden_dim or d
            fan_in = num_summary_tokens * d
            self.mlp = nn.Sequential(nn.Linear(fan_in, hidden), nn.SiLU(), nn.Linear(hidden, d * d))
            nn.init.normal_(self.mlp[0].weight, std=1.0 / math.sqrt(fan_in))
            nn.init.normal_(self.mlp[2].weight,
                            std=1.0 / math.sqrt(_SILU_SECOND_MOMENT * hidden * d))
            nn.init.zeros_(self.mlp[0].bias)
            nn.init.zeros_(self.mlp[2].bias)

    def personal_weight(self, X_sum: torch.Tensor) -> torch.Tensor:
        """``W_pffn = f(X_sum)``: ``[B, n_sum, d] -> [B, d, d]``."""
        if self.mlp is not None:
            B = X_sum.shape[0]
            return self.mlp(X_sum.reshape(B, -1)).view(B, self.embedding_dim, self.embedding_dim)
        return torch.einsum("bmi,mj->bij", X_sum, self.weight)

    def forward(self, X_sum: Optional[torch.Tensor], S: torch.Tensor) -> torch.Tensor:
        if not self.personalized:
            return S @ self.weight
        if X_sum is None:
            raise ValueError("a personalized PFFN needs X_sum; got None")
        if self.low_rank_product and self.mlp is None and 2 * self.num_summary_tokens < self.embedding_dim:
            return torch.bmm(S, X_sum.transpose(1, 2)) @ self.weight  # [B, N, n_sum] @ [n_sum, d]
        return torch.bmm(S, self.personal_weight(X_sum))

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, "
                f"num_summary_tokens={self.num_summary_tokens}, "
                f"form={self.form!r}, personalized={self.personalized}")
