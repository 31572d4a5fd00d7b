"""pytest at the repository root (the unit tests, and nbval runs such as
`pytest --nbval-lax chapters`): nothing pytest runs writes the reader's progress.

The kernels nbval starts are child processes and inherit this variable, so a check() in a notebook
records nothing (utils.tracking.record returns at once). The unit tests that test the progress file
itself lift it for their own private file (tests/conftest.py).
"""

import os

os.environ["HWLLM_NO_PROGRESS"] = "1"
