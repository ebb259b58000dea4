"""The one exception our command-line tools turn into a one-line error and exit code 2, and the guard
every command runs under."""
import sys
from typing import Callable


class InputError(Exception):
    """Bad user input: the message names the file and the problem, and fits on one line."""


class StepFailed(Exception):
    """A step of a longer run (an nnU-Net command of an experiment) failed; its own output says why (exit 1)."""


def run_guarded(prog: str, action: Callable[[], None]) -> int:
    """Runs action; bad input and file system errors (disk full, no permission) become one line on stderr and
    exit code 2 (no traceback)."""
    try:
        action()
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions, a file where a folder should be: nothing to debug in our code
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except StepFailed as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
