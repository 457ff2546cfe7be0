"""Tests of astroclip.inputs.units: flux densities, spectral axes and uncertainties."""

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

from astroclip.exceptions import InputError
from astroclip.inputs import grid
from astroclip.inputs.units import (flux_factor, std_unit, uncertainty_parts,
                                    wavelength_angstrom)


def test_flux_factor_converts_f_nu_at_each_pixel():
    wave = np.array([4000.0, 8000.0])
    factor = flux_factor(u.Jy, wave)
    expected = (1 * u.Jy).to_value(grid.FLUX_UNIT, u.spectral_density(wave * u.AA))
    np.testing.assert_allclose(factor, expected)
    assert factor[0] / factor[1] == pytest.approx(4.0)   # f_lambda = f_nu c / lambda^2
    np.testing.assert_allclose(flux_factor(grid.FLUX_UNIT, wave), 1.0)


@pytest.mark.parametrize("unit, match", [
    (u.dimensionless_unscaled, "no unit; astroclip never assumes one: pass flux_unit="),
    (u.erg / u.s / u.cm**2, "a flux .*not a flux density"),
    (u.Jy / u.sr, "surface brightness: multiply by the solid angle"),
    (u.count, "not flux-calibrated"),
    (u.ABmag, "logarithmic units"),
    (u.m, "cannot be converted.*spectral flux density"),
])
def test_flux_factor_names_the_problem(unit, match):
    with pytest.raises(u.UnitsError, match=match):
        flux_factor(unit, np.array([5000.0]), "the flux")


def test_wavelengths_in_any_spectral_unit():
    np.testing.assert_allclose(wavelength_angstrom([0.5, 1.0] * u.um), [5000.0, 10000.0])
    np.testing.assert_allclose(wavelength_angstrom((6000.0 * u.AA).to(u.Hz, u.spectral())),
                               6000.0)
    np.testing.assert_array_equal(wavelength_angstrom([1.0, 2.0]), [1.0, 2.0])
    with pytest.raises(u.UnitConversionError, match=r"axis has unit s, .*; pass a fix"):
        wavelength_angstrom([1.0] * u.s, name="axis", fix="pass a fix")


def test_uncertainty_kinds_and_units():
    shape = (2, 3)
    ones = np.ones(shape)
    assert uncertainty_parts(None, None, u.Jy, shape) == (None, None, None)
    kind, arr, unit = uncertainty_parts(StdDevUncertainty(ones), None, u.Jy, shape)
    assert (kind, unit) == ("std", u.Jy)
    kind, _, unit = uncertainty_parts(VarianceUncertainty(ones, unit=u.mJy**2), None, u.Jy,
                                      shape)
    assert (kind, unit) == ("var", u.mJy)
    kind, _, unit = uncertainty_parts(None, ones / u.Jy**2, u.Jy, shape)
    assert (kind, unit) == ("ivar", u.Jy)
    kind, _, unit = uncertainty_parts(InverseVariance(ones), None, u.Jy, shape)
    assert (kind, unit) == ("ivar", u.Jy)
    assert std_unit("std", None, u.Jy) == u.Jy
    with pytest.raises(InputError, match="either uncertainty= or ivar="):
        uncertainty_parts(StdDevUncertainty(ones), ones, u.Jy, shape)
    with pytest.raises(TypeError, match="plain array uncertainty is ambiguous"):
        uncertainty_parts(ones, None, u.Jy, shape)
    with pytest.raises(InputError, match=r"ivar has shape \(3,\) but flux has shape \(2, 3\)"):
        uncertainty_parts(None, np.ones(3), u.Jy, shape)
