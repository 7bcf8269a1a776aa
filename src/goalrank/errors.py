"""One exception type per failure class; the CLI turns each into one clear line and exit code 2.

Messages name the file, column or field at fault and what was expected, so a user can fix the
input without reading a traceback.
"""


class GoalRankError(Exception):
    """Base class of every error the CLI reports as a single line."""


class DataError(GoalRankError):
    """An input file or dataset folder is missing, malformed, or empty after filtering."""


class ConfigError(GoalRankError):
    """A configuration key is unknown or a value is out of range."""


class ArtifactError(GoalRankError):
    """A written artefact (dataset, checkpoint, report) is truncated, corrupted or incompatible."""
