"""What ran where: a busy or small machine moves every figure, so headers say it."""

from __future__ import annotations

import importlib.metadata
import os


def versions(*distributions: str) -> str:
    """``name version`` of each installed distribution, comma-separated.

    Example::

        versions("jupiter-bus", "aio-pika")  # "jupiter-bus 0.1.0, aio-pika 9.4.1"
    """
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in distributions)


def load_average(separator: str = ", ") -> str:
    """The 1, 5 and 15 minute load averages, two decimals each.

    Example::

        print(f"{os.cpu_count()} CPUs, load average {load_average()}")
    """
    return separator.join(f"{x:.2f}" for x in os.getloadavg())
