"""Shock emission template (tengri.physics.shock)."""

import numpy as np
import pytest

from tengri.physics import shock


def test_template_vector_and_doublet_ratios():
    names = list(shock.SHOCK_LINE_RATIOS)[::-1] + ["C  4  1548.19A"]
    weights = shock.shock_line_weights(names)
    assert weights[-1] == 0.0
    assert weights[names.index(shock.HBETA_LINE)] == 1.0
    r = shock.SHOCK_LINE_RATIOS
    np.testing.assert_allclose(r["O  3  4958.91A"] / r["O  3  5006.84A"], 1 / 2.98, rtol=0.02)
    np.testing.assert_allclose(r["N  2  6548.05A"] / r["N  2  6583.45A"], 1 / 3.05, rtol=0.02)
    # shock-like: [N II]/Hα and [S II]/Hα high, in the LINER/Seyfert part of the BPT diagrams
    assert r["N  2  6583.45A"] / r["H  1  6562.80A"] > 0.5
    assert (r["S  2  6716.44A"] + r["S  2  6730.82A"]) / r["H  1  6562.80A"] > 0.4


def test_missing_template_line_is_an_error():
    with pytest.raises(ValueError, match="lacks the shock template"):
        shock.shock_line_weights(["H  1  4861.32A"])


def test_shock_lnu_is_linear_in_fraction():
    cont = np.linspace(1.0, 2.0, 5)
    template = np.array([0.0, 1.0, 0.0, 3.0, 0.0])
    one = np.asarray(shock.shock_lnu(1.0, cont, 10.0, template))
    np.testing.assert_allclose(one, cont + 10.0 * template)
    np.testing.assert_allclose(np.asarray(shock.shock_lnu(0.25, cont, 10.0, template)), 0.25 * one)
