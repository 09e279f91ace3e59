"""The parts of ``bench/profiler.py``: the lab, the agent in A, each phase and the report.

The script is the entry point (``python bench/profiler.py``); the modules here import as
``profiler_parts.<module>`` with ``bench/`` first on ``sys.path``. The lab is built with
``tests.netns``, ``tests.sshd`` and ``tests.proxy``, so importing the package puts the
repository root on ``sys.path`` too.
"""

from harness.repository import put_root_on_path

put_root_on_path()
