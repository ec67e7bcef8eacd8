import os

import pytest

pytest.register_assert_rewrite("runs")  # its comparisons explain themselves on failure

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
