"""Write a file through a temporary sibling and a rename, so readers never see half of it."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, newline=None):
    """``with atomic_write(p) as f: f.write(...)``: ``p`` appears complete or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "w", newline=newline) as f:
            yield f
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
