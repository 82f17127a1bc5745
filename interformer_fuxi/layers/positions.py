"""Padding-invariant positions and the newest valid items of a padded history.

Both helpers take the validity mask (``True`` = real item, from ids != 0 upstream) and
never look at the embedding values, so they behave the same under ``padding: pre`` and
``padding: post``.
"""
from typing import Tuple

import torch


def valid_positions(mask: torch.Tensor) -> torch.Tensor:
    """Rank of each valid token among the valid tokens, in index order.

    Pre- and post-padded copies of one history give every item the same position,
    which is what RoPE needs to be padding-invariant. Padded slots get 0.

    Args:
        mask: ``[B, T]`` bool, True = valid.

    Returns:
        ``[B, T]`` long.

    Example::

        >>> valid_positions(torch.tensor([[False, True, True], [True, True, False]]))
        tensor([[0, 0, 1],
                [0, 1, 0]])
    """
    mask = mask.bool()
    rank = mask.long().cumsum(dim=-1) - 1
    return torch.where(mask, rank, torch.zeros_like(rank))


def recent_positions(mask: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where the ``k`` newest valid items of each history are, newest first.

    The newest item is the last valid position in index order (true for pre- and for
    post-padding). Slots beyond a history's length point at position 0, with mask False.

    Args:
        mask: ``[B, T]`` bool, True = valid.
        k (int): number of recent items (0 gives empty tensors).

    Returns:
        index ``[B, k]`` long and slot_mask ``[B, k]`` bool.

    Example::

        >>> index, m = recent_positions(torch.tensor([[True, True, True, False]]), 2)
        >>> index.tolist(), m.tolist()
        ([[2, 1]], [[True, True]])
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    B = mask.shape[0]
    if k == 0:
        return (torch.zeros(B, 0, dtype=torch.long, device=mask.device),
                torch.zeros(B, 0, dtype=torch.bool, device=mask.device))
    mask = mask.bool()
    # Rank from the end among valid items: newest valid = 0, next = 1, ...
    from_end = mask.flip(-1).long().cumsum(-1).flip(-1) - 1
    slots = torch.arange(k, device=mask.device)
    onehot = mask.unsqueeze(1) & (from_end.unsqueeze(1) == slots.view(1, k, 1))  # [B, k, T]
    return onehot.long().argmax(-1), onehot.any(-1)


def recent_tokens(S: torch.Tensor, mask: torch.Tensor, k: int
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` newest valid items of each history, newest first (:func:`recent_positions`).

    Slots beyond a history's length are zero vectors with mask False.

    Args:
        S: ``[B, T, d]`` tokens.
        mask: ``[B, T]`` bool, True = valid.
        k (int): number of recent tokens (0 gives empty tensors).

    Returns:
        tokens ``[B, k, d]`` and token_mask ``[B, k]`` bool.

    Example::

        >>> S = torch.arange(1., 5.).view(1, 4, 1)
        >>> tok, m = recent_tokens(S, torch.tensor([[True, True, True, False]]), 2)
        >>> tok.view(-1).tolist(), m.tolist()
        ([3.0, 2.0], [[True, True]])
    """
    B, T, d = S.shape
    index, token_mask = recent_positions(mask, k)
    # Gather (not a one-hot matmul) so non-finite values at padded slots cannot leak in.
    tokens = S.gather(1, index.unsqueeze(-1).expand(B, k, d))
    return tokens.masked_fill(~token_mask.unsqueeze(-1), 0.0), token_mask
