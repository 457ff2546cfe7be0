"""R^2 and the one retrieval_accuracy (numpy arrays and torch tensors, one contract)."""

import numpy as np
import pytest
import torch
from astropy.table import Table
from sklearn.metrics import r2_score as sk_r2

from astroclip.evaluation import r2_score, retrieval_accuracy, retrieval_scores
from astroclip.exceptions import InputError


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_r2_score(rng):
    y = rng.normal(size=(100, 2))
    p = y + 0.3 * rng.normal(size=(100, 2))
    np.testing.assert_allclose(r2_score(y, p), sk_r2(y, p, multioutput="raw_values"))
    assert r2_score(y[:, 0], p[:, 0]) == pytest.approx(sk_r2(y[:, 0], p[:, 0]))
    ty, tp = Table(y, names=["Z", "M"]), Table(p[:, ::-1], names=["M", "Z"])
    scores = r2_score(ty, tp)
    assert scores["Z"] == pytest.approx(sk_r2(y[:, 0], p[:, 0]))
    with pytest.raises(ValueError, match="constant"):
        r2_score(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="shape"):
        r2_score(y, p[:50])


def test_retrieval_accuracy_ranks(rng):
    n = 300
    spectra = rng.normal(size=(n, 16)).astype(np.float32)
    images = spectra + 0.6 * rng.normal(size=spectra.shape).astype(np.float32)
    t = retrieval_accuracy(images, spectra, k=(1, 5), batch_size=70)
    # ranks agree with a brute-force argsort of the cosine similarities
    s = _unit(images.astype(np.float64)) @ _unit(spectra.astype(np.float64)).T
    ref_rank = np.array([np.flatnonzero(np.argsort(-s[i]) == i)[0] + 1 for i in range(n)])
    np.testing.assert_array_equal(t.meta["ranks"], ref_rank)
    np.testing.assert_allclose(t["accuracy"], [np.mean(ref_rank <= 1), np.mean(ref_rank <= 5)])
    np.testing.assert_allclose(t["chance"], [1 / n, 5 / n])
    assert t.meta["median_rank"] == np.median(ref_rank)
    assert t.meta["mean_reciprocal_rank"] == pytest.approx(np.mean(1 / ref_rank))
    assert t["accuracy"][0] > 10 / n
    shuffled = retrieval_accuracy(images, spectra[rng.permutation(n)], k=5)
    assert shuffled["accuracy"][0] < t["accuracy"][0]
    # k >= N: every counterpart is found, at chance level 1
    full = retrieval_accuracy(images, spectra, k=n + 1)
    assert full["accuracy"][0] == 1.0 and full["chance"][0] == 1.0


def test_retrieval_accuracy_tensors_and_arrays_agree(rng):
    spectra = rng.normal(size=(120, 8)).astype(np.float32)
    images = spectra + 0.8 * rng.normal(size=spectra.shape).astype(np.float32)
    ref = retrieval_accuracy(images, spectra, k=(1, 3, 10))
    got = retrieval_accuracy(torch.from_numpy(images), torch.from_numpy(spectra), k=(1, 3, 10),
                             batch_size=16)
    assert isinstance(got, Table) and got.colnames == ["k", "accuracy", "chance"]
    np.testing.assert_array_equal(got.meta["ranks"], ref.meta["ranks"])
    np.testing.assert_array_equal(got["accuracy"], ref["accuracy"])
    # a permuted partner list is scored as a miss; unrelated embeddings score near chance
    z = torch.randn(50, 8)
    assert retrieval_accuracy(z, z[torch.roll(torch.arange(50), 1)], k=1)["accuracy"][0] == 0
    chance = retrieval_accuracy(torch.randn(400, 8), torch.randn(400, 8), k=20, batch_size=64)
    assert 0.02 < chance["accuracy"][0] < 0.09


def test_retrieval_scores_both_directions(rng):
    z = torch.tensor(rng.normal(size=(50, 8)), dtype=torch.float32)
    scores = retrieval_scores(z, z + 0.01 * torch.randn(50, 8), k=(1, 5))
    assert scores == {"image_to_spectrum_top1": 1.0, "image_to_spectrum_top5": 1.0,
                      "spectrum_to_image_top1": 1.0, "spectrum_to_image_top5": 1.0}
    images, spectra = rng.normal(size=(80, 4)), rng.normal(size=(80, 4))
    one_way = retrieval_accuracy(spectra, images, k=5)["accuracy"][0]
    assert retrieval_scores(images, spectra, k=(5,))["spectrum_to_image_top5"] == one_way


@pytest.mark.parametrize("as_tensor", [False, True])
def test_retrieval_accuracy_bad_inputs(rng, as_tensor):
    images = rng.normal(size=(20, 6)).astype(np.float32)
    spectra = rng.normal(size=(20, 6)).astype(np.float32)
    conv = torch.from_numpy if as_tensor else np.asarray
    with pytest.raises(InputError, match="same objects in the same order"):
        retrieval_accuracy(conv(images), conv(spectra[:10]))
    with pytest.raises(InputError, match="dimension 6 but the database 4"):
        retrieval_accuracy(conv(images), conv(spectra[:, :4]))
    with pytest.raises(InputError, match="positive integer"):
        retrieval_accuracy(conv(images), conv(spectra), k=0)
    bad = images.copy()
    bad[[2, 7]] = np.nan
    with pytest.raises(InputError, match=r"queries has 2 row\(s\) with NaN.*rows 2, 7"):
        retrieval_accuracy(conv(bad), conv(spectra))
    zero = spectra.copy()
    zero[4] = 0
    with pytest.raises(InputError, match=r"database has 1 all-zero row\(s\) \(rows 4\)"):
        retrieval_accuracy(conv(images), conv(zero))
    if as_tensor:
        with pytest.raises(InputError, match="both as torch tensors or both as arrays"):
            retrieval_accuracy(conv(images), spectra)
