"""Errors a user can act on. Each message says what is wrong and how to fix it."""


class ReplicationError(Exception):
    """Base class: the command-line entry point prints these without a traceback."""


class ConfigError(ReplicationError):
    """A parameter in params.yaml (or a claims file) is missing or invalid."""


class DataError(ReplicationError):
    """Input data is missing, unreadable or malformed."""


def missing_input(path: object, what: str, without_dvc: str = "") -> DataError:
    """The error for an input a pipeline stage makes that is not there: the missing path, and
    how to make it (``dvc repro`` runs every stage whose outputs are missing, in order)."""
    alternative = f" Without DVC: {without_dvc}" if without_dvc else ""
    return DataError(f"{path} does not exist ({what}). Run `dvc repro` in the repository root: "
                     f"it runs the stages that make it.{alternative}")


class DataUnavailable(DataError):
    """A raw file could be obtained neither from the mirror nor from upstream."""


class ChecksumMismatch(DataError):
    """A raw file's SHA-256 differs from the digest pinned in the package."""

    def __init__(self, name: str, source: str, expected: str, actual: str,
                 algorithm: str = "sha256"):
        self.name, self.source, self.expected, self.actual = name, source, expected, actual
        self.algorithm = algorithm
        super().__init__(
            f"checksum mismatch for {name} (from {source}):\n"
            f"  expected {algorithm} {expected}\n"
            f"  actual   {algorithm} {actual}\n"
            "The copy is corrupted or is not the file this project pins. Delete it (or fix the "
            "mirror) and run the stage again."
        )
