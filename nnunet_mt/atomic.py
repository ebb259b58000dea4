"""Writing files so that a reader never sees half of one: write beside, then rename."""
import os


def write_text_atomic(path: str, text: str) -> None:
    """Writes text to path via path + '.partial' and an atomic rename."""
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
