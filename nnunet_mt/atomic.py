"""Writing files so that a reader never sees half of one: write beside, then rename."""
import os


def write_text_atomic(path: str, text: str) -> None:
    """Writes text to path via path + '.partial' and an atomic rename; on failure (e.g. disk full) the
    partial file is removed and path keeps its previous content."""
    tmp = path + ".partial"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # e.g. ENOSPC at close: say which file
            raise OSError(e.errno, e.strerror or str(e), path) from None
        raise
