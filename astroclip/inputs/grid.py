"""The fixed conventions of DESI spectra and Legacy Survey images.

This module is the one place where the DESI wavelength grid, the spectral flux
unit, the image bands, pixel scale and cutout sizes, the Legacy Survey colour
mapping constants and the survey-fitted augmentation distributions are declared
(the AstroCLIP paper, section 3.3).  Every other module imports them
from here.
"""

import numpy as np
import astropy.units as u

__all__ = [
    "WAVE_MIN", "WAVE_MAX", "WAVE_STEP", "N_PIXELS", "WAVELENGTH", "WAVELENGTH_EDGES",
    "WAVELENGTH_UNIT", "FLUX_UNIT", "IVAR_UNIT", "DESI_ARMS",
    "BANDS", "PIXEL_SCALE", "IMAGE_SIZE", "CROP_SIZE_PAPER", "CROP_SIZE_RELEASED",
    "NANOMAGGY", "NANOMAGGY_EQUIVALENCY", "AB_NANOMAGGY", "COLOR_SCALES", "COLOR_RGB_PLANE",
    "COLOR_M", "COLOR_Q", "PSF_SIGMA_LOGNORMAL", "NOISE_SIGMA_LOGNORMAL",
    "wavelength_grid",
]

#: First pixel centre of the combined DESI coadd grid (vacuum Angstrom).
WAVE_MIN = 3600.0
#: Last pixel centre of the combined DESI coadd grid (vacuum Angstrom).
WAVE_MAX = 9824.0
#: Pixel width of the DESI grid (Angstrom).
WAVE_STEP = 0.8
#: Number of pixels on the combined DESI grid.
N_PIXELS = 7781

#: Unit of the wavelength grid.
WAVELENGTH_UNIT = u.AA
#: DESI flux unit, 1e-17 erg s^-1 cm^-2 Angstrom^-1.
FLUX_UNIT = u.Unit(1e-17 * u.erg / u.s / u.cm**2 / u.AA)
#: Unit of inverse variance on the DESI grid.
IVAR_UNIT = FLUX_UNIT**-2

#: Pixel centres of the DESI grid (float64, Angstrom, read-only).
WAVELENGTH = WAVE_MIN + WAVE_STEP * np.arange(N_PIXELS, dtype=np.float64)
WAVELENGTH.setflags(write=False)
#: Pixel edges of the DESI grid (N_PIXELS + 1 values, Angstrom, read-only).
WAVELENGTH_EDGES = WAVE_MIN - WAVE_STEP / 2 + WAVE_STEP * np.arange(N_PIXELS + 1, dtype=np.float64)
WAVELENGTH_EDGES.setflags(write=False)

#: The three spectrograph arms of a DESI coadd: (first, last wavelength, pixels).
DESI_ARMS = {"B": (3600.0, 5800.0, 2751), "R": (5760.0, 7620.0, 2326), "Z": (7520.0, 9824.0, 2881)}

#: Legacy Survey bands used by the models, in model order.
BANDS = ("g", "r", "z")
#: Legacy Survey pixel scale.
PIXEL_SCALE = 0.262 * u.arcsec
#: Side of the stored cutouts (pixels).
IMAGE_SIZE = 152
#: Centre crop of the workshop paper's image encoder (pixels).
CROP_SIZE_PAPER = 96
#: Centre crop of the released (ViT) image encoder (pixels).
CROP_SIZE_RELEASED = 144

#: The nanomaggy (AB magnitude 22.5, 3631e-9 Jy); dimensionless in astropy.
NANOMAGGY = u.nanomaggy
#: Equivalency turning maggies into a spectral flux density (AB zero point).
NANOMAGGY_EQUIVALENCY = u.zero_point_flux(3631.0 * u.Jy)
#: AB magnitude of a flux of one nanomaggy: ``m = AB_NANOMAGGY - 2.5 log10(flux / nanomaggy)``.
AB_NANOMAGGY = 22.5

#: Legacy Survey viewer colour mapping: per-band scale.
COLOR_SCALES = {"g": 6.0, "r": 3.4, "z": 2.2}
#: Legacy Survey viewer colour mapping: RGB plane of each band.
COLOR_RGB_PLANE = {"z": 0, "r": 1, "g": 2}
#: Legacy Survey viewer colour mapping: offset m.
COLOR_M = 0.03
#: Legacy Survey viewer colour mapping: asinh softening Q.
COLOR_Q = 20.0

#: PSF sigma (pixels) per band as scipy.stats.lognorm (shape, loc, scale), g, r, z.
PSF_SIGMA_LOGNORMAL = {
    "g": (0.2110, 1.0807, 1.3153),
    "r": (0.3008, 1.2394, 0.9165),
    "z": (0.3471, 1.1928, 0.8234),
}
#: Sky noise sigma (nanomaggies) per band as scipy.stats.lognorm (shape, loc, scale).
NOISE_SIGMA_LOGNORMAL = {
    "g": (0.2265, -0.00067, 0.00376),
    "r": (0.2431, -0.00237, 0.00674),
    "z": (0.1335, -0.01434, 0.02608),
}


def wavelength_grid(*, edges=False):
    """The DESI wavelength grid as an astropy Quantity.

    Parameters
    ----------
    edges : bool, optional
        Return the ``N_PIXELS + 1`` pixel edges instead of the pixel centres.

    Returns
    -------
    `~astropy.units.Quantity`
        Vacuum wavelengths in Angstrom.

    Examples
    --------
    >>> from astroclip.inputs.grid import wavelength_grid
    >>> wave = wavelength_grid()
    >>> wave.shape, wave[0], wave[-1]
    ((7781,), <Quantity 3600. Angstrom>, <Quantity 9824. Angstrom>)
    """
    values = WAVELENGTH_EDGES if edges else WAVELENGTH
    return u.Quantity(values.copy(), WAVELENGTH_UNIT)
