"""Triton kernels of the ffops operators, one file per op (``kernels/<op>.py``): plain launchers
whose math is the schema's in csrc/ops.cpp; what they share is ``kernels/_common.py``."""
