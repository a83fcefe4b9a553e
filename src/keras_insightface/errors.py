"""One exception type for bad user input, so the CLI can print it as a single line."""


class DataError(ValueError):
    """Bad input data: the message names the file or record and what is wrong."""


class DatasetError(DataError):
    """A problem of the dataset as a whole (a stale index): never skipped as one unreadable image would be."""
