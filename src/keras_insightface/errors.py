"""One exception type for bad user input, so the CLI can print it as a single line."""


class DataError(ValueError):
    """Bad input data: the message names the file or record and what is wrong."""


class DatasetError(DataError):
    """A problem of the dataset as a whole (a stale index): never skipped as one unreadable image would be."""


class RunProblems(DataError):
    """Every problem found before a run starts, reported together: one line each."""

    def __init__(self, problems):
        self.problems = [str(problem) for problem in problems]
        lines = self.problems if len(self.problems) == 1 else [
            f"{len(self.problems)} problems, nothing was started:", *(f"  - {problem}" for problem in self.problems)]
        super().__init__("\n".join(lines))
