"""The errors mriscribe raises on purpose, each with a message a user can act on."""


class MriscribeError(Exception):
    """Base of every error that is meant to be shown to a user as it is."""


class FileProblemError(MriscribeError):
    """An error about one file or path: the message starts with it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class InputError(FileProblemError):
    """An input file is empty, truncated, of an unsupported type or otherwise unreadable."""


class UnsupportedFormatError(InputError):
    """The file's content (or its DICOM encoding) is none mriscribe reads: HTTP 415."""


class LimitError(InputError):
    """An input is larger than a configured limit (bytes, pixels, count)."""


class OutputError(FileProblemError):
    """An output (JSON, PDF) cannot be written where it was asked for."""


class ModelError(FileProblemError):
    """A model file is missing, corrupt, or not the kind of model that was expected."""


class MissingExtraError(MriscribeError):
    """An optional feature needs a package extra that is not installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package: pip install 'mriscribe[{extra}]'"
        )
