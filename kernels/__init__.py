"""Triton kernels of the ffops operators, one file per op (``kernels/<op>.py``): plain launchers
whose math is the schema's in csrc/ops.cpp; what they share is ``kernels/_common.py``.

Installed as ``ffops.kernels``. Only when the repository root is on ``sys.path`` (running from it) can
this folder also be found as a top-level package ``kernels``, shadowing an installed one of that name:
Hugging Face's ``kernels``, which ``transformers`` imports. Imported under that name, this module puts
the installed package in its place (or fails as if it were not here).
"""

if __name__ == "kernels":
    import importlib.util
    import os
    import sys
    from importlib.machinery import PathFinder

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = PathFinder.find_spec("kernels", [p for p in sys.path if os.path.abspath(p or ".") != _root])
    if _spec is None:
        del sys.modules["kernels"]
        raise ModuleNotFoundError("No module named 'kernels'", name="kernels")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _module  # the import statement returns what sys.modules holds
    _spec.loader.exec_module(_module)
