"""The one exception our command-line tools turn into a one-line error and exit code 2."""


class InputError(Exception):
    """Bad user input: the message names the file and the problem, and fits on one line."""
