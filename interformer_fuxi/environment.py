"""Hardware and software of this machine, as a BARS submission lists them (fuxictr last)."""
import os
import platform
import subprocess
from importlib import metadata

# (label, distribution) in BARS's order; fuxictr closes the list
SOFTWARE = (("python", None), ("pytorch", "torch"), ("pandas", "pandas"), ("numpy", "numpy"),
            ("scipy", "scipy"), ("sklearn", "scikit-learn"), ("pyyaml", "PyYAML"), ("h5py", "h5py"),
            ("tqdm", "tqdm"), ("fuxictr", "fuxictr"))


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        if names:
            return f"{names[0]} ({len(names)} logical cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def _ram():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2 ** 20:.0f}G"
    except OSError:
        pass
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f}G"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def _gpus():
    import torch
    if not torch.cuda.is_available():
        return "none (CPU only)"
    names = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        names.append(f"{p.name} {p.total_memory / 2 ** 30:.0f}G")
    counts = {n: names.count(n) for n in names}
    return ", ".join(f"{c} x {n}" if c > 1 else n for n, c in counts.items())


def _version(dist):
    if dist is None:
        return platform.python_version()
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(path):
    """The commit of the repository holding ``path`` (``+local changes`` if dirty), or None."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=path, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + (" (+local changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment():
    """``{"hardware": [(label, value)], "software": [(label, value)]}`` read from this machine."""
    import torch
    hardware = [("CPU", _cpu()), ("GPU", _gpus()), ("RAM", _ram()), ("OS", platform.platform())]
    software = [("CUDA", torch.version.cuda or "none (CPU build)")]
    software += [(label, _version(dist)) for label, dist in SOFTWARE]
    return {"hardware": hardware, "software": software}


def format_block(pairs):
    return "\n".join(f"{label}: {value}" for label, value in pairs)
