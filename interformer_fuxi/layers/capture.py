"""Whether the forward is being captured as one graph rather than run op by op."""
import torch


def capturing_graph() -> bool:
    """True under ``torch.compile``, ``torch.export`` (and so the ONNX exporter) and TorchScript
    tracing. The CPU fast paths (length grouping, distinct-token merging, the C++ kernels, the
    folded rotations) read the batch on the host to choose a path, or call ops a graph cannot
    hold; while capturing they step aside for the plain PyTorch ops, which give the same result.
    """
    return torch.compiler.is_compiling() or torch.jit.is_tracing()
