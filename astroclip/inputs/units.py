"""Units of spectra: flux densities, spectral axes and uncertainties, converted for the grid.

astroclip never assumes a unit: a flux without one, or in a unit that is not a
spectral flux density (a flux, a surface brightness, counts, magnitudes), is
refused with a message that says what to do.  Flux densities per unit
wavelength or frequency are converted to the DESI unit (1e-17 erg s^-1 cm^-2
Angstrom^-1) with ``u.spectral_density`` at each pixel's wavelength
(`flux_factor`); spectral axes in any unit of ``u.spectral()`` become vacuum
Angstrom (`wavelength_angstrom`); any astropy uncertainty becomes one kind
(standard deviation, variance or inverse variance) and the unit of a standard
deviation (`uncertainty_parts`), converted to an inverse variance on the grid
by `astroclip.inputs.resample`.
"""

import numpy as np
import astropy.units as u
from astropy.nddata import (NDUncertainty, StdDevUncertainty, VarianceUncertainty,
                            InverseVariance)

from . import grid
from ..exceptions import InputError

__all__ = ["FLUX_HINT", "wavelength_angstrom", "flux_factor", "std_unit", "uncertainty_parts",
           "check_shape"]

#: What a flux must be, for messages.
FLUX_HINT = ("give the flux as a spectral flux density: per unit wavelength (e.g. "
             "1e-17 erg/(s cm2 Angstrom), W/(m2 nm)), per unit frequency (Jy, "
             "erg/(s cm2 Hz)) or photons per unit wavelength")


def flux_factor(unit, centres, name="flux"):
    """Per-pixel factor converting a spectral flux density in ``unit`` to DESI's unit.

    Parameters
    ----------
    unit : `~astropy.units.Unit`
        Flux density per unit wavelength or frequency (or photons per unit
        wavelength...): anything ``u.spectral_density`` converts.
    centres : `numpy.ndarray`
        Pixel centres in Angstrom (the factor of an f_nu depends on them).
    name : str, optional
        What the flux is, for messages.

    Returns
    -------
    `numpy.ndarray`
        float64 factors, one per pixel, to `astroclip.inputs.grid.FLUX_UNIT`.

    Raises
    ------
    astropy.units.UnitsError
        No unit, a flux (not a density), a surface brightness, counts,
        magnitudes...: the message says which and what to do.

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> from astroclip.inputs.units import flux_factor
    >>> flux_factor(u.Unit("1e-16 erg / (s cm2 Angstrom)"), np.array([5000.0, 6000.0]))
    array([10., 10.])
    """
    if isinstance(unit, u.FunctionUnitBase) or isinstance(unit, u.LogUnit):
        raise u.UnitConversionError(
            f"{name} is in logarithmic units ({unit}); convert it to a linear flux density "
            "first (e.g. flux.physical or flux.to(u.Jy)) and propagate the uncertainty")
    if unit == u.dimensionless_unscaled:
        raise u.UnitsError(
            f"{name} has no unit; astroclip never assumes one: pass flux_unit=... (e.g. "
            "flux_unit='1e-17 erg/(s cm2 Angstrom)') or an astropy Quantity / Spectrum "
            "with a flux unit")
    if unit.is_equivalent(u.erg / u.s / u.cm**2):
        raise u.UnitConversionError(
            f"{name} unit {unit} is a flux (power per area), not a flux density; if it is "
            "lambda*F_lambda divide by the wavelength, if it is the flux per pixel divide by "
            "the pixel width")
    try:
        factor = (1.0 * unit).to_value(grid.FLUX_UNIT, u.spectral_density(centres * u.AA))
    except u.UnitConversionError:
        if unit.is_equivalent(u.Jy / u.sr) or unit.is_equivalent(grid.FLUX_UNIT / u.sr):
            hint = ("it is a surface brightness: multiply by the solid angle of the fibre or "
                    "aperture (e.g. flux * (np.pi * (0.75 * u.arcsec)**2).to(u.sr))")
        elif unit.is_equivalent(u.count) or unit.is_equivalent(u.count / u.s) \
                or unit.is_equivalent(u.adu):
            hint = "it is not flux-calibrated: calibrate it first"
        else:
            hint = FLUX_HINT
        raise u.UnitConversionError(
            f"{name} unit {unit} cannot be converted to {grid.FLUX_UNIT} "
            f"(DESI flux density): {hint}") from None
    return np.broadcast_to(np.asarray(factor, dtype=np.float64), centres.shape)


def std_unit(kind, unit, flux_unit):
    """The unit of a standard deviation, for an uncertainty of ``kind`` in ``unit``.

    Parameters
    ----------
    kind : {"std", "var", "ivar"}
        What the uncertainty is.
    unit : `~astropy.units.Unit` or None
        Its unit (None: in the flux unit).
    flux_unit : `~astropy.units.Unit`
        The unit of the flux.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astroclip.inputs.units import std_unit
    >>> std_unit("ivar", u.Jy**-2, u.Jy)
    Unit("Jy")
    """
    if unit is None:
        return flux_unit
    if kind == "std":
        return unit
    if kind == "var":
        return unit ** 0.5
    return unit ** -0.5


def uncertainty_parts(uncertainty, ivar, flux_unit, shape):
    """The uncertainty arguments as ``(kind, array, unit of a standard deviation)``.

    Parameters
    ----------
    uncertainty : `~astropy.nddata.NDUncertainty`, `~astropy.units.Quantity` or None
        `~astropy.nddata.StdDevUncertainty`, `~astropy.nddata.VarianceUncertainty`,
        `~astropy.nddata.InverseVariance`, or a Quantity standard deviation.
    ivar : array-like, `~astropy.units.Quantity` or None
        Inverse variance (in ``flux_unit**-2`` for a plain array).
    flux_unit : `~astropy.units.Unit`
        The unit of the flux.
    shape : tuple of int
        The shape of the flux (the uncertainty must have it).

    Returns
    -------
    tuple
        ``("std" | "var" | "ivar", array, unit)``, or ``(None, None, None)``
        without an uncertainty.

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> from astropy.nddata import VarianceUncertainty
    >>> from astroclip.inputs.units import uncertainty_parts
    >>> kind, values, unit = uncertainty_parts(VarianceUncertainty(np.ones(3), unit=u.Jy**2),
    ...                                        None, u.Jy, (3,))
    >>> kind, unit
    ('var', Unit("Jy"))
    """
    if uncertainty is not None and ivar is not None:
        raise InputError("give either uncertainty= or ivar=, not both")
    if ivar is not None:
        unit = getattr(ivar, "unit", None)
        if isinstance(ivar, InverseVariance):
            unit, ivar = ivar.unit, ivar.array
        arr = np.asarray(getattr(ivar, "value", ivar))
        return "ivar", check_shape(arr, shape, "ivar"), std_unit("ivar", unit, flux_unit)
    if uncertainty is None:
        return None, None, None
    if isinstance(uncertainty, NDUncertainty):
        kinds = {StdDevUncertainty: "std", VarianceUncertainty: "var", InverseVariance: "ivar"}
        kind = next((k for t, k in kinds.items() if isinstance(uncertainty, t)), None)
        if kind is None:
            raise TypeError(f"uncertainty of type {type(uncertainty).__name__} cannot be "
                            "turned into an inverse variance; use StdDevUncertainty, "
                            "VarianceUncertainty or InverseVariance")
        arr = np.asarray(uncertainty.array)
        return kind, check_shape(arr, shape, "uncertainty"), std_unit(
            kind, uncertainty.unit, flux_unit)
    if isinstance(uncertainty, u.Quantity):
        return "std", check_shape(uncertainty.value, shape, "uncertainty"), uncertainty.unit
    raise TypeError("a plain array uncertainty is ambiguous: wrap it in "
                    "astropy.nddata.StdDevUncertainty, VarianceUncertainty or "
                    "InverseVariance, give a Quantity standard deviation, or use ivar=")


def check_shape(arr, shape, name):
    """``arr``, checked to have the flux's ``shape`` (one value per flux pixel)."""
    if arr.shape != tuple(shape):
        raise InputError(f"{name} has shape {arr.shape} but flux has shape {tuple(shape)}; "
                         f"give one {name} value per flux pixel")
    return arr


def wavelength_angstrom(wavelength, *, name="wavelength", fix=None):
    """Wavelengths, frequencies, energies or wavenumbers -> float64 vacuum Angstrom.

    Parameters
    ----------
    wavelength : `~astropy.units.Quantity` or array-like
        Any unit of ``u.spectral()``; a plain array is taken as Angstrom.
    name : str, optional
        What the values are, for messages.
    fix : str, optional
        What to do about a unit that is none of these (default: give one).

    Raises
    ------
    astropy.units.UnitConversionError
        A unit that ``u.spectral()`` does not convert to a wavelength.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astroclip.inputs.units import wavelength_angstrom
    >>> wavelength_angstrom([400.0, 500.0] * u.nm)
    array([4000., 5000.])
    """
    if isinstance(wavelength, u.Quantity):
        try:
            return np.asarray(wavelength.to_value(u.AA, u.spectral()), dtype=np.float64)
        except u.UnitConversionError:
            raise u.UnitConversionError(
                f"{name} has unit {wavelength.unit!s}, which is not a wavelength, frequency, "
                "energy or wavenumber; " + (fix or "give it in such a unit (e.g. Angstrom)")
            ) from None
    return np.asarray(wavelength, dtype=np.float64)
