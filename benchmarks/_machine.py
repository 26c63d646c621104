"""The machine a benchmark ran on, in one line (shared by every script in benchmarks/)."""

from __future__ import annotations

import os
import platform


def compiled() -> None:
    """Compile flipguard's sources to bytecode, as a wheel install does.

    An editable install writes none, and with ``PYTHONDONTWRITEBYTECODE`` set
    (as on these machines) every fresh process -- each CLI run, each Ray
    worker -- would compile them again: about 0.2 s that no installed user pays.
    """
    import compileall
    import pathlib

    import flipguard

    compileall.compile_dir(str(pathlib.Path(flipguard.__file__).parent), quiet=1)


def machine() -> str:
    """Cores, CPU model, RAM, Python/numpy/scikit-learn versions and the current load average.

    Also compiles flipguard's sources (:func:`compiled`) so fresh processes start as installed.
    """
    compiled()
    import numpy
    import sklearn

    cpu, mem = "unknown CPU", float("nan")
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as fh:
            mem = int(next(line.split()[1] for line in fh if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {cpu}, {mem:.1f} GiB RAM; Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}; load average {load}")
