"""Coverage: how much of what a reader asked for a snapshot holds, and what is missing or stale.

The judgement is apart from the snapshots: :func:`link_coverage` reads a link mask (and
a stale mask) over known node indices, :func:`node_coverage` a mapping of entries held
with when each was received. ``NetworkData.coverage`` and ``ResourceData.coverage`` call
them; the facade's waiting reads use the :class:`Coverage` to decide whether to wait on.

Example::

    >>> valid = np.array([[False, True], [False, False]])
    >>> cov = link_coverage(("n1", "n2"), {"n1": 0, "n2": 1}, valid, None, nodes=["n1", "n2"])
    >>> cov.requested, cov.missing, cov.missing_examples
    (2, 1, ('n2->n1',))
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["EXAMPLES", "Coverage", "link_coverage", "node_coverage"]

EXAMPLES: Final = 20
"""How many missing and stale entries a :class:`Coverage` names by default."""


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of a requested set of links (or nodes) a snapshot holds.

    ``requested`` counts the entries asked for (with nothing listed: every entry held);
    ``missing`` those absent and ``stale`` those older than ``max_age``; the
    ``*_examples`` name a few of each (``src->dst`` for links) and ``unknown_nodes``
    the listed nodes never heard of.

    Example::

        cov = data.coverage(nodes=["n1", "n2", "n3"], max_age=60)
        if cov.missing:
            print(cov.missing_examples)
    """

    requested: int
    missing: int = 0
    stale: int = 0
    missing_examples: tuple[str, ...] = ()
    stale_examples: tuple[str, ...] = ()
    unknown_nodes: tuple[str, ...] = ()

    @property
    def fresh(self) -> int:
        """Entries present and not stale."""
        return self.requested - self.missing - self.stale

    @property
    def complete(self) -> bool:
        """Something was requested and all of it is present (stale or not)."""
        return self.requested > 0 and self.missing == 0


# -- links ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Wanted:
    """Links a reader asked for: a mask over known nodes, and those naming unknown ones."""

    mask: npt.NDArray[np.bool_]
    absent: int = 0
    absent_examples: list[str] = field(default_factory=list)
    unknown: dict[str, None] = field(default_factory=dict)


def link_coverage(
    names: Sequence[str],
    index: Mapping[str, int],
    valid: npt.NDArray[np.bool_],
    stale: npt.NDArray[np.bool_] | None,
    *,
    nodes: Iterable[str] | None = None,
    links: Iterable[tuple[str, str]] | None = None,
    limit: int = EXAMPLES,
) -> Coverage:
    """How much of the requested links ``valid`` holds.

    ``names`` and ``index`` are the known nodes (index order, and name -> index);
    ``valid`` the ``(N, N)`` mask of links held and ``stale`` of those too old (``None``:
    staleness not judged). ``nodes`` requests every ordered link between two of them;
    ``links`` lists ``(src, dst)`` pairs; with neither, every link held is requested.
    Self-links are never requested.

    Example::

        link_coverage(data.nodes, index, data.valid, data.stale_mask(60), nodes=["n1", "n2"])
    """
    if nodes is None and links is None:
        wanted = _Wanted(valid)
    else:
        wanted = _wanted(index, len(names), nodes, links, limit)
    missing_mask = wanted.mask & ~valid
    missing = int(np.count_nonzero(missing_mask))
    examples = wanted.absent_examples[:limit]
    examples += _pairs(names, missing_mask, limit - len(examples))
    stale_count = 0
    stale_examples: list[str] = []
    if stale is not None:
        stale_mask = wanted.mask & stale
        stale_count = int(np.count_nonzero(stale_mask))
        stale_examples = _pairs(names, stale_mask, limit)
    return Coverage(
        requested=int(np.count_nonzero(wanted.mask)) + wanted.absent,
        missing=missing + wanted.absent,
        stale=stale_count,
        missing_examples=tuple(examples),
        stale_examples=tuple(stale_examples),
        unknown_nodes=tuple(wanted.unknown),
    )


def _pairs(names: Sequence[str], mask: npt.NDArray[np.bool_], limit: int) -> list[str]:
    """``src->dst`` of the first ``limit`` links set in ``mask``."""
    if limit <= 0:
        return []
    rows, cols = np.nonzero(mask)
    return [
        f"{names[i]}->{names[j]}"
        for i, j in zip(rows[:limit].tolist(), cols[:limit].tolist(), strict=True)
    ]


def _wanted(
    index: Mapping[str, int],
    n: int,
    nodes: Iterable[str] | None,
    links: Iterable[tuple[str, str]] | None,
    limit: int,
) -> _Wanted:
    """The links requested by ``nodes`` (all pairs) and ``links``, as a mask over the
    ``n`` known nodes plus a count of those naming nodes never heard of."""
    wanted = _Wanted(np.zeros((n, n), dtype=np.bool_))
    if nodes is not None:
        listed = list(dict.fromkeys(nodes))
        known = np.array([index[x] for x in listed if x in index], dtype=np.intp)
        wanted.mask[np.ix_(known, known)] = True
        wanted.unknown.update((x, None) for x in listed if x not in index)
        wanted.absent += len(listed) * (len(listed) - 1) - len(known) * (len(known) - 1)
        if wanted.unknown:  # all known: nothing absent, and no N^2 walk to find that
            absent_pairs = (
                f"{src}->{dst}"
                for src in listed
                for dst in listed
                if src != dst and (src in wanted.unknown or dst in wanted.unknown)
            )
            wanted.absent_examples += itertools.islice(absent_pairs, limit)
    for src, dst in dict.fromkeys(links or ()):
        i, j = index.get(src), index.get(dst)
        if i is not None and j is not None:
            wanted.mask[i, j] = True
            continue
        wanted.unknown.update((x, None) for x in (src, dst) if x not in index)
        if src != dst:
            wanted.absent += 1
            wanted.absent_examples.append(f"{src}->{dst}")
    np.fill_diagonal(wanted.mask, False)
    return wanted


# -- nodes ----------------------------------------------------------------------------------


def node_coverage(
    held: Mapping[str, tuple[object, float]],
    *,
    nodes: Iterable[str] | None = None,
    stale_before: float | None = None,
    limit: int = EXAMPLES,
) -> Coverage:
    """How much of the requested ``nodes`` (default: all held) ``held`` holds.

    ``held`` maps each node to its value and when this process received it
    (``time.monotonic()``); an entry received before ``stale_before`` is stale
    (``None``: staleness not judged).

    Example::

        >>> cov = node_coverage({"n1": (sample, 5.0)}, nodes=["n1", "n2"], stale_before=10.0)
        >>> cov.requested, cov.missing_examples, cov.stale_examples
        (2, ('n2',), ('n1',))
    """
    wanted = list(held) if nodes is None else list(dict.fromkeys(nodes))
    missing = [x for x in wanted if x not in held]
    stale: list[str] = []
    if stale_before is not None:
        stale = [x for x in wanted if x in held and held[x][1] < stale_before]
    return Coverage(
        requested=len(wanted),
        missing=len(missing),
        stale=len(stale),
        missing_examples=tuple(missing[:limit]),
        stale_examples=tuple(stale[:limit]),
        unknown_nodes=tuple(missing),
    )
