"""The parts of ``bench/bus.py``: settings, queues, the contenders, the sampling loops, the report.

The script is the entry point (``python bench/bus.py``); the modules here import as
``bus_parts.<module>`` with ``bench/`` first on ``sys.path``.
"""
