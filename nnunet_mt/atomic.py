"""Writing files so that a reader never sees half of one: write beside, then rename."""
import os
from typing import Dict


def write_text_atomic(path: str, text: str) -> None:
    """Writes text to path via path + '.partial' and an atomic rename; on failure (e.g. disk full) the
    partial file is removed and path keeps its previous content."""
    write_texts_atomic({path: text})


def write_texts_atomic(texts: Dict[str, str]) -> None:
    """Writes a set of files that belong together (e.g. ood_scores.json and .csv): every member goes to
    path + '.partial' first and only when all are written are they renamed, so a full disk leaves the
    previous set (or none), never a new file beside an old one."""
    written = []
    try:
        for path, text in texts.items():
            tmp = path + ".partial"
            written.append(tmp)
            try:
                with open(tmp, "w") as f:
                    f.write(text)
            except OSError as e:
                if e.filename is None:  # e.g. ENOSPC at close: say which file
                    raise OSError(e.errno, e.strerror or str(e), path) from None
                raise
        for path in texts:
            os.replace(path + ".partial", path)
    except BaseException:
        for tmp in written:
            try:
                os.remove(tmp)
            except OSError:
                pass
        raise


def save_npz_atomic(path: str, compressed: bool = False, **arrays) -> None:
    """np.savez(_compressed) to path (ending in .npz) via a '.partial.npz' beside it and an atomic rename;
    on failure the partial file is removed and path keeps its previous content."""
    import numpy as np
    tmp = path[:-len(".npz")] + ".partial.npz"
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
