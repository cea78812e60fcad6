"""Benchmarks (speed and memory). ``python bench/run.py`` measures everything in one run; see its docstring.

Figures go in notes and the README, never in tests. The package is not installed (``pyproject.toml`` lists
the installed packages); the scripts put the repository on ``sys.path`` themselves.
"""
