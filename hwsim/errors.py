"""The one exception type axlab raises for bad input: its message is shown to the user as is."""


class AxlabError(Exception):
    """A user-facing error; the CLI prints ``axlab: <message>`` and exits non-zero."""


class NetlistError(AxlabError):
    """A netlist that cannot be turned into a LUT; the message names the file and the problem."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
