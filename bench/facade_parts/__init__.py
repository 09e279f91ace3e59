"""The pieces of ``bench/facade.py``: the facade and its live state at 10 to 1,000 nodes.

The script is the entry point (``python bench/facade.py``); each module here holds one
figure or one piece the figures share, and imports as ``facade_parts.<module>`` with
``bench/`` first on ``sys.path``.
"""
