"""The parts of ``bench/transfer.py``: the site, the cases and each part of the run.

The script is the entry point (``python bench/transfer.py``); the modules here import as
``transfer_parts.<module>`` with ``bench/`` first on ``sys.path``. The copies go to an
``sshd`` started with ``tests.sshd``, so importing the package puts the repository root
on ``sys.path`` too.
"""

from harness.repository import put_root_on_path

put_root_on_path()
