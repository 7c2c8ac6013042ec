"""Outcomes of a measurement that are results, not crashes.

A backend raises these; the runner turns them into a result file with a status.
Infrastructure failures (the job killed, cancelled, timed out) never reach here:
they leave no result so the next run resubmits the cell.
"""


class Unsupported(Exception):
    """This cell cannot be measured here (no CUDA, vLLM not installed, ...).

    The message is the reason recorded in the result file.
    """


class MeasurementError(Exception):
    """The measurement itself failed deterministically (a benchmark exited
    non-zero, a server died during start-up, output could not be parsed)."""
