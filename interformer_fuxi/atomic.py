"""Write a file through a temporary sibling and a rename, so readers never see half of it."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, newline=None, mode="w", durable=False):
    """``with atomic_write(p) as f: f.write(...)``: ``p`` appears complete or not at all.
    ``durable``: also fsync the file and the folder, so that a power cut after the block
    leaves the new file (checkpoints and resumable states)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
        if durable:
            directory = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path):
    """``with atomic_dir(out) as tmp: <write files into tmp>``: ``out`` is replaced by the
    complete folder at the end, or left as it was if the block fails."""
    import shutil
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".tmp-", dir=parent)
    try:
        yield tmp
        old = tmp + ".old"
        if os.path.exists(path):
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
