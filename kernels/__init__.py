"""Triton kernels of the ffops operators (plain launchers; see ``ffops.kernels.ff``)."""
