"""The torch.library ops of each family and their public Python entry points."""
