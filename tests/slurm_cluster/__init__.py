"""A real one-node Slurm cluster (with accounting) for the tests: see README.md."""
