"""Small synthetic classification data for the FF tests (no dataset files needed)."""

import torch


def blobs(n: int, *, classes: int = 4, features: int = 24, noise: float = 0.3, seed: int = 0):
    """``n`` samples of ``classes`` well-separated prototypes plus noise, in [0, 1]; the first
    ``classes`` features are zero (the label overlay writes there). Returns ``(x [n, features], y [n])``."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(classes, features, generator=torch.Generator().manual_seed(1234)) > 0.5).float()
    y = torch.randint(0, classes, (n,), generator=g)
    x = (protos[y] + noise * torch.randn(n, features, generator=g)).clamp(0, 1)
    x[:, :classes] = 0
    return x, y
