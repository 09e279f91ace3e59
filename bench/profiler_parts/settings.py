"""What one run of ``bench/profiler.py`` measures, the shaped link, and how long it may wait."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tests.netns import Tbf

SHAPED: Final = Tbf(rate="8mbit", burst="8kb", latency="50ms")
COMPRESSION: Final = 60.0
"""Our profiler's time settings are divided by this in the real run."""
MB: Final = 1_000_000
OUR_KB: Final = 1000  # probe_sizes_kb and kbit() count 1000 bytes a KB
DRUPE_SIZES_KB: Final = (1, 10, 100, 1000, 10000)
DRUPE_QUICK_CAP_KB: Final = 1000
DRUPE_KB: Final = 1024  # DRUPE's generated files: "K = 1024"
DRUPE_POINTS: Final = 10  # its capped Mongo collection kept the last 10
DRUPE_PROBES_PER_HOUR: Final = 60  # one probe per link every minute
REPEATS: Final = 3
AIM_ERROR: Final = 0.10  # DESIGN.md section 5: within 10 % over the probed range
SIM_HOURS: Final = 24
REQUEST_TIMEOUT_S: Final = 60.0
WARM_UP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 20.0
SCP_TIMEOUT_S: Final = 60.0
FITS_TIMEOUT_PER_ROUND_S: Final = 20.0
IDLE_GAP_S: Final = 0.5
"""Pause before each DRUPE probe and each "after idle" copy through the worker: longer
than TCP's retransmission timeout (200 ms or more), so the connection restarts from its
initial window as after any idle spell, and tbf's 8 KB burst is full again (8 ms), as
DRUPE's probes a minute apart found the link. "Back to back" copies have no pause: a
copy right after another starts on a warm window and an empty bucket."""
IDLE: Final = "after idle"
BUSY: Final = "back to back"


@dataclass(frozen=True, slots=True)
class Settings:
    """What one run measures."""

    url: str
    quick: bool
    seed: int
    rounds: int
    """Probing rounds of ours (each probes every size) before its fit is taken."""
    drupe_sizes_kb: tuple[int, ...]
    check_sizes_kb: tuple[int, ...]
    scp: bool


def settings_for(url: str, quick: bool, seed: int, scp: bool) -> Settings:
    if quick:
        capped = tuple(kb for kb in DRUPE_SIZES_KB if kb <= DRUPE_QUICK_CAP_KB)
        return Settings(url, True, seed, 2, capped, (16, 64, 256, 1000), scp)
    return Settings(url, False, seed, 4, DRUPE_SIZES_KB, (16, 64, 512, 2048, 4096), scp)
