"""Baselines the benchmarks compare ffops against: plain-PyTorch implementations written the way
popular public code writes them (see each module's docstring for what is faithful and what has
been aligned to ffops' math so that the numbers are comparable).
"""
