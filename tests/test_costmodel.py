"""The link-cost model: known curves come back, and no fit predicts nonsense."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupiter_bus.costmodel import Fit, LinkModel, fit, kbit

SIZES_KBIT = np.array([8.0, 80.0, 800.0, 8_000.0, 80_000.0])


def curve(a: float, b: float, c: float, x: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * x + b) * x + c
    return result


def test_kbit_is_jupiters_unit() -> None:
    assert kbit(1000) == 8.0
    assert kbit(10 * 1024 * 1024) == pytest.approx(83_886.08)


def test_exact_quadratic_is_recovered_despite_tiny_a() -> None:
    a, b, c = 1.2e-9, 0.00125, 42.0
    result = fit(SIZES_KBIT, curve(a, b, c, SIZES_KBIT))
    assert result is not None
    assert result.model == "quadratic"
    assert result.a == pytest.approx(a, rel=1e-6)
    assert result.b == pytest.approx(b, rel=1e-6)
    assert result.c == pytest.approx(c, rel=1e-6)
    assert result.r2 == pytest.approx(1.0)
    assert (result.samples, result.min_kbit, result.max_kbit) == (5, 8.0, 80_000.0)


def test_noisy_link_is_predicted_within_a_few_percent_at_every_size() -> None:
    rng = np.random.default_rng(7)
    a, b, c = 2e-9, 0.125, 3.0  # ~8 Mbit/s link with 3 ms overhead
    x = np.repeat(SIZES_KBIT, 5)
    y = curve(a, b, c, x) * rng.normal(1.0, 0.03, x.size)
    result = fit(x, y)
    assert result is not None
    predicted = np.asarray(result.cost_ms(SIZES_KBIT))
    assert np.all(np.abs(predicted / curve(a, b, c, SIZES_KBIT) - 1) < 0.05)


def test_fewer_than_three_distinct_sizes_is_refused() -> None:
    assert fit([8, 8, 8, 800, 800], [1, 1, 1, 2, 2]) is None
    assert fit([], []) is None


def test_data_that_would_give_a_falling_curve_falls_back_to_nonnegative_terms() -> None:
    # big transfers measured faster than medium ones: polyfit bends the curve down
    x = np.array([8.0, 800.0, 8_000.0, 80_000.0])
    y = np.array([5.0, 60.0, 400.0, 300.0])
    assert np.polyfit(x, y, 2)[0] < 0  # what DRUPE would have published
    result = fit(x, y)
    assert result is not None
    assert result.model in ("linear", "constrained")
    assert min(result.a, result.b, result.c) >= 0
    grid = np.linspace(8.0, 80_000.0, 200)
    assert np.all(np.diff(np.asarray(result.cost_ms(grid))) >= 0)


def test_a_pure_line_is_reported_as_linear_when_a_would_be_negative() -> None:
    x = np.array([10.0, 100.0, 1000.0, 10_000.0])
    y = np.array([11.0, 60.0, 500.0, 950.0])  # so concave the fitted curve would fall
    assert np.polyfit(x, y, 2)[0] < 0
    result = fit(x, y)
    assert result is not None
    assert result.model == "linear"
    assert result.a == 0.0
    assert result.b > 0


def test_failed_or_nonsense_samples_are_ignored() -> None:
    x = [8.0, 80.0, 800.0, 8_000.0, float("nan"), 80.0]
    y = [1.0, 2.0, 3.0, 4.0, 5.0, -1.0]
    result = fit(x, y)
    assert result is not None
    assert result.samples == 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1.0, 8.0, 80.0, 800.0, 8_000.0, 80_000.0]),
            st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
        ),
        min_size=3,
        max_size=30,
    )
)
def test_no_fit_ever_predicts_negative_or_decreasing_cost(
    points: list[tuple[float, float]],
) -> None:
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    result = fit(x, y)
    if np.unique(x).size < 3:
        assert result is None
        return
    assert result is not None
    # from size 0 to far beyond the largest probe: schedulers ask for any size
    top = max(result.max_kbit, 1.0)
    grid = np.concatenate([np.linspace(0.0, top, 50), np.geomspace(top, 1000 * top, 50)])
    predicted = np.asarray(result.cost_ms(grid))
    assert np.all(predicted >= -1e-9 * max(1.0, float(y.max())))
    assert np.all(np.diff(predicted) >= -1e-9 * max(1.0, float(y.max())))


def test_a_concave_probe_set_does_not_underestimate_a_bigger_file() -> None:
    # What the demo met: three probe sizes on a 50 Mbit/s, 14 ms link, the largest
    # cheaper per Kbit than the others (the SSH window opening up). A quadratic with
    # a < 0 fits them and then predicted 98 ms for a 2 MB file that took 350 ms.
    probes = fit([128.0, 1024.0, 4096.0], [17.0, 37.0, 95.0])
    assert probes is not None
    assert probes.a >= 0
    assert probes.cost_ms(16_000.0) >= 0.9 * (14.0 + 16_000.0 / 50.0)


def test_link_model_keeps_a_bounded_window_and_expires_old_samples() -> None:
    model = LinkModel(window=6, max_age_seconds=100)
    for i, size in enumerate([8.0, 80.0, 800.0] * 4):
        model.add(size, 1.0 + size / 100, ts=float(i))
    assert len(model.samples) == 6
    assert model.fit() is not None
    model.expire(now=108.5)  # samples with ts < 8.5 are older than 100 s
    assert [s.ts for s in model.samples] == [9.0, 10.0, 11.0]
    model.expire(now=1_000.0)
    assert model.fit() is None


def test_meaningful_change_is_detected() -> None:
    base = Fit(a=0.0, b=0.1, c=5.0, samples=9, r2=0.99, min_kbit=8, max_kbit=8000, model="linear")
    assert base.differs_from(None)
    assert not base.differs_from(base)
    nudged = Fit(
        a=0.0, b=0.101, c=5.0, samples=10, r2=0.99, min_kbit=8, max_kbit=8000, model="linear"
    )
    assert not nudged.differs_from(base)
    moved = Fit(a=0.0, b=0.2, c=5.0, samples=10, r2=0.99, min_kbit=8, max_kbit=8000, model="linear")
    assert moved.differs_from(base)
