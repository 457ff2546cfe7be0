"""
A DESI spectrum on the model grid
=================================

Read a real DESI Early Data Release coadd file, combine its three spectrograph
arms on the 7781-pixel grid the models use, and plot a galaxy spectrum with its
1-sigma noise.

The file is one of the small DESI test files that ship with specutils (five
fibres, some of them sky or unassigned fibres without data).
"""

import importlib.util
import os

import matplotlib.pyplot as plt
import numpy as np

from astroclip.inputs import grid
from astroclip.inputs.desi import read_desi_coadd

# %%
# Read the coadd
# --------------
# `read_desi_coadd` reads the B, R and Z arms with their inverse variance and
# mask, resamples them onto the grid (they already sit on it) and combines them
# by inverse-variance weighting where they overlap.  The FIBERMAP comes along,
# with flags for sky fibres and science targets.

specutils_dir = importlib.util.find_spec("specutils").submodule_search_locations[0]
path = os.path.join(specutils_dir, "io", "default_loaders", "tests", "desi_test_data",
                    "coadd-sv3-dark-26065.fits")
spectra = read_desi_coadd(path)
print(spectra.meta["TARGETID", "OBJTYPE", "IS_SKY", "IS_TARGET", "COVERAGE", "VALID"])

# %%
# Plot a target with its noise
# ----------------------------
# ``ivar = 0`` marks pixels without information; the 1-sigma noise per pixel is
# ``1 / sqrt(ivar)`` elsewhere.  The shaded bands are the three arms, which
# overlap around 5780 and 7570 Angstrom, where the combined noise drops.

targets = np.flatnonzero(spectra.meta["IS_TARGET"] & spectra.meta["VALID"])
row = int(targets[np.argmax(spectra.meta["FLUX_R"][targets])])   # the brightest target
wave = spectra.wavelength.value
flux = spectra.flux[row]
ivar = spectra.ivar[row]
sigma = np.full_like(flux, np.nan)
sigma[ivar > 0] = 1.0 / np.sqrt(ivar[ivar > 0])
smooth = np.convolve(flux, np.ones(15) / 15.0, mode="same")

fig, (ax, ax_noise) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, layout="constrained",
                                   gridspec_kw={"height_ratios": [3, 1]})
colours = {"B": "tab:blue", "R": "tab:red", "Z": "tab:purple"}
for arm, (first, last, _) in grid.DESI_ARMS.items():
    for axis in (ax, ax_noise):
        axis.axvspan(first, last, color=colours[arm], alpha=0.08, lw=0)
    ax.text(0.5 * (first + last), 0.97, f"{arm} arm", transform=ax.get_xaxis_transform(),
            ha="center", va="top", color=colours[arm])
ax.fill_between(wave, flux - sigma, flux + sigma, color="0.75", lw=0,
                label=r"flux $\pm 1\sigma$")
ax.plot(wave, flux, color="0.45", lw=0.3)
ax.plot(wave, smooth, color="k", lw=1.0, label="15-pixel running mean")
top = np.nanpercentile(smooth, 99.8)
ax.set_ylim(-0.5 * top, 2.0 * top)
ax.set_ylabel(r"flux [$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ $\AA^{-1}$]")
ax.set_title(f"DESI TARGETID {spectra.meta['TARGETID'][row]}  (SV3 dark, healpix 26065)")
ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.9))
ax_noise.plot(wave, sigma, color="tab:orange", lw=0.6)
ax_noise.set_ylim(0, np.nanpercentile(sigma, 99.5) * 1.1)
ax_noise.set_ylabel(r"$1\sigma$ noise")
ax_noise.set_xlabel(r"vacuum wavelength [$\AA$]")
ax_noise.set_xlim(wave[0], wave[-1])
plt.show()
