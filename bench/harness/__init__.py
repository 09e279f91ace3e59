"""What the benchmarks in ``bench/`` share: options, the event loop, statistics, tables.

The scripts run as ``python bench/<name>.py``, so ``bench/`` is first on ``sys.path`` and
this package imports as ``harness``::

    from harness.stats import Percentiles
    from harness.tables import Ruled, print_table

Each module does one thing: :mod:`harness.options` (the command line),
:mod:`harness.broker` (the AMQP URL), :mod:`harness.loop` (uvloop),
:mod:`harness.environment` (what ran where), :mod:`harness.stats` (percentiles and
ratios), :mod:`harness.window` (calls in flight), :mod:`harness.rounds` (the order of
contenders), :mod:`harness.tables` (tables and their cells), :mod:`harness.children`
(child processes), :mod:`harness.jupiter_scp` (the legacy ``sshpass scp``),
:mod:`harness.repository` (the repository root on ``sys.path``, for ``tests.*``) and
:mod:`harness.errors` (the error a bench raises).
"""
