"""Small files of the layouts that are not ours, written the way their publishers do."""

import h5py
import numpy as np

from astroclip.inputs import grid


def _write_paper(path, rng, sizes=(10, 7)):
    truth = []
    with h5py.File(path, "w") as f:
        for g, n in enumerate(sizes):
            sky = rng.normal(size=(n, 3, 152, 152)).astype(np.float32)  # (band, y, x)
            spectra = rng.normal(size=(n, 7781)).astype(np.float32)
            spectra[:, :3] = np.nan
            grp = f.create_group(str(g))
            grp["images"] = sky.transpose(0, 3, 2, 1)  # stored (x, y, band)
            grp["spectra"] = spectra
            grp["redshifts"] = rng.uniform(0, 0.5, n).astype(np.float32)
            grp["targetids"] = np.arange(n, dtype=np.int64) + 1000 * g
            truth.append((sky, spectra, grp["redshifts"][:], grp["targetids"][:]))
    return truth


def _write_mmu(tmp_path, rng, n_spec=6, n_img=5, size=160, scale=0.262,
               bands=("des-g", "des-r", "des-i", "des-z")):
    spath, ipath = tmp_path / "desi.hdf5", tmp_path / "legacysurvey.hdf5"
    ids = np.arange(n_spec, dtype=np.int64) + 39627000000000000
    ra, dec = rng.uniform(150, 151, n_spec), rng.uniform(2, 3, n_spec)
    flux = rng.normal(size=(n_spec, 7781)).astype(np.float32)
    mask = np.zeros((n_spec, 7781), dtype=bool)
    mask[:, 100:110] = True
    with h5py.File(spath, "w") as f:
        f["object_id"] = ids
        f["ra"], f["dec"] = ra, dec
        f["Z"] = rng.uniform(0, 1, n_spec)
        f["spectrum_flux"] = flux
        f["spectrum_ivar"] = np.ones((n_spec, 7781), dtype=np.float32)
        f["spectrum_lambda"] = np.tile(grid.WAVELENGTH.astype(np.float32), (n_spec, 1))
        f["spectrum_mask"] = mask
        f["spectrum_lsf_sigma"] = np.full(n_spec, 0.8, dtype=np.float32)
    # images: objects 1..n_img in reverse order (spectrum 0 has no image), plus a stranger
    order = np.arange(n_img, 0, -1)
    images = rng.normal(size=(n_img + 1, len(bands), size, size)).astype(np.float32)
    img_ids = [str(ids[k]).encode() for k in order] + [b"999"]
    with h5py.File(ipath, "w") as f:
        f["object_id"] = np.array(img_ids)
        f["ra"] = np.append(ra[order], 10.0)
        f["dec"] = np.append(dec[order], -10.0)
        f["image_array"] = images
        f["image_band"] = np.tile(np.array([b.encode() for b in bands]), (n_img + 1, 1))
        f["image_ivar"] = np.ones_like(images)
        f["image_mask"] = np.ones(images.shape, dtype=bool)
        f["image_psf_fwhm"] = np.ones((n_img + 1, len(bands)), dtype=np.float32)
        f["image_scale"] = np.full((n_img + 1, len(bands)), scale, dtype=np.float32)
    return spath, ipath, dict(ids=ids, flux=flux, images=images, order=order)
