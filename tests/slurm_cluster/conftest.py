# The fixture for this directory's own tests. tests/conftest.py may register
# it too: start_cluster() then reuses the cluster this process started.
from .conftest_fixture import slurm_cluster  # noqa: F401
