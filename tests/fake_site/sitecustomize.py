"""TEST-ONLY: with this folder on PYTHONPATH, every Python process starts with the fake pipeline.

Python's ``site`` module imports ``sitecustomize`` at start-up (a documented hook of the interpreter, not
of this project). tests/test_deployment.py puts this folder on the PYTHONPATH of the Prefect worker, whose
flow-run processes inherit it; tests/test_flow.py does the same for a run it kills midway. See
tests/pipeline_fakes.py for what the fakes do.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

import pipeline_fakes  # noqa: E402

pipeline_fakes.install()
