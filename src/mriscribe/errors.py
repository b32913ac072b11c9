"""The errors mriscribe raises on purpose, each with a message a user can act on."""


class MriscribeError(Exception):
    """Base of every error that is meant to be shown to a user as it is."""


class InputError(MriscribeError):
    """An input file is empty, truncated, of an unsupported type or otherwise unreadable."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class LimitError(InputError):
    """An input is larger than a configured limit (bytes, pixels, count)."""


class OutputError(MriscribeError):
    """An output (JSON, PDF) cannot be written where it was asked for."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ModelError(MriscribeError):
    """A model file is missing, corrupt, or not the kind of model that was expected."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class MissingExtraError(MriscribeError):
    """An optional feature needs a package extra that is not installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package: pip install 'mriscribe[{extra}]'"
        )
