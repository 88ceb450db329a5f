import math

import pytest

from fusedopt import schedules as S


def test_values():
    assert S.constant(0.1)(0) == S.constant(0.1)(1000) == 0.1
    # The textbook example: lr0 = 0.2, decay 1, epochs 1..4.
    f = S.inverse_time_decay(0.2, 1.0)
    assert [f(t) for t in (0, 1, 2, 3, 4)] == pytest.approx([0.2, 0.1, 0.2 / 3, 0.05, 0.04])
    assert S.exponential_decay(1.0, 0.5)(3) == 0.125
    g = S.inverse_sqrt_decay(0.1, 2.0)
    assert g(4) == pytest.approx(0.1) and g(0) == g(1) == pytest.approx(0.2)
    h = S.step_decay(1.0, 0.1, 10)
    assert [h(t) for t in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    c = S.cosine_decay(1.0, 100, final=0.1)
    assert c(0) == 1.0 and c(100) == pytest.approx(0.1) and c(500) == pytest.approx(0.1)
    assert c(50) == pytest.approx(0.55)
    w = S.linear_warmup(1.0, 10)
    assert [w(t) for t in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]


def test_join_warmup_then_cosine():
    j = S.join([S.linear_warmup(1.0, 10), S.cosine_decay(1.0, 90)], boundaries=[10])
    assert j(5) == 0.5
    assert j(10) == 1.0  # the cosine's own t = 0
    assert j(55) == pytest.approx(0.5)
    assert j(100) == pytest.approx(0.0, abs=1e-15)
    for t in range(0, 100):
        assert 0.0 <= j(t) <= 1.0


@pytest.mark.parametrize("make", [
    lambda: S.constant(-1), lambda: S.inverse_time_decay(0.1, -1),
    lambda: S.exponential_decay(math.nan, 0.5), lambda: S.step_decay(1, 0.5, 0),
    lambda: S.cosine_decay(1, 0), lambda: S.linear_warmup(1, -5),
    lambda: S.join([S.constant(1)], [5]), lambda: S.join([S.constant(1), S.constant(2)], [-1]),
    lambda: S.join([S.constant(1), S.constant(2), S.constant(3)], [5, 5]),
])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_bad_time():
    with pytest.raises(ValueError, match="t"):
        S.constant(1.0)(-1)
    with pytest.raises(TypeError):
        S.cosine_decay(1, 10)("3")
    with pytest.raises(TypeError):
        S.join([1, 2], [3])
