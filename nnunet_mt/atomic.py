"""Writing files and folders so that a reader never sees half of one: write under a temporary name beside
the target, then rename. One temporary name for everything: ``partial_path``."""
import contextlib
import os
import shutil
from typing import Dict, Iterator

PARTIAL_PREFIX = ".partial."


def partial_path(path: str) -> str:
    """The temporary name of a file or folder being written: '.partial.' + its name, in the same folder (the
    rename stays on one file system; the ending, by which SimpleITK, numpy and matplotlib pick a format, is kept)."""
    folder, name = os.path.split(os.path.normpath(path))
    return os.path.join(folder, PARTIAL_PREFIX + name)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.remove(path)
        except OSError:
            pass


@contextlib.contextmanager
def written_atomically(path: str) -> Iterator[str]:
    """Yields ``partial_path(path)`` to write a file or a folder into (a stale folder left by a killed run is
    removed first; a stale file is simply overwritten). When the block ends it is renamed to path (a file there
    is replaced; an old folder there must be removed inside the block); when the block raises, it is removed
    and path is left as it was."""
    tmp = partial_path(path)
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes text to path through its partial file and a rename; on failure (e.g. disk full) the partial file
    is removed and path keeps its previous content."""
    write_texts_atomic({path: text})


def write_texts_atomic(texts: Dict[str, str]) -> None:
    """Writes a set of files that belong together (e.g. ood_scores.json and .csv): every member goes to its
    partial file first and only when all are written are they renamed, so a full disk leaves the previous set
    (or none), never a new file beside an old one."""
    written = []
    try:
        for path, text in texts.items():
            tmp = partial_path(path)
            written.append(tmp)
            try:
                with open(tmp, "w") as f:
                    f.write(text)
            except OSError as e:
                if e.filename is None:  # e.g. ENOSPC at close: say which file
                    raise OSError(e.errno, e.strerror or str(e), path) from None
                raise
        for path in texts:
            os.replace(partial_path(path), path)
    except BaseException:
        for tmp in written:
            _remove(tmp)
        raise


def save_npz_atomic(path: str, compressed: bool = False, **arrays) -> None:
    """np.savez(_compressed) to path (ending in .npz) through its partial file and a rename; on failure the
    partial file is removed and path keeps its previous content."""
    import numpy as np
    with written_atomically(path) as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
