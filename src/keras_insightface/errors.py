"""One exception type for bad user input, so the CLI can print it as a single line."""


class DataError(ValueError):
    """Bad input data: the message names the file or record and what is wrong."""
