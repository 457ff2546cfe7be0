"""Evaluation of embeddings: the paper's property benchmark and retrieval scores.

- `astroclip.evaluation.metrics`: `r2_score`, `retrieval_accuracy` (numpy
  arrays or torch tensors; also used by the training stages' validation) and
  `retrieval_scores`;
- `astroclip.evaluation.knn`: zero-shot `knn_regression` (FAISS);
- `astroclip.evaluation.fewshot`: the few-shot MLP head, `FewShotRegressor` /
  `fewshot_regression`;
- `astroclip.evaluation.photometry`: `photometry_features` and the one
  `photometry_baseline`;
- `astroclip.evaluation.benchmark`: the Table-1 benchmark, `evaluate_properties`,
  `evaluate_embeddings` (an embeddings file joined with labels by ``targetid``)
  and `r2_table`.

Nothing here needs FAISS until a k-NN regression runs.
"""

from .benchmark import evaluate_embeddings, evaluate_properties, labelled_embeddings, r2_table
from .fewshot import FewShotRegressor, fewshot_regression
from .knn import knn_regression
from .metrics import r2_score, retrieval_accuracy, retrieval_scores
from .photometry import photometry_baseline, photometry_features

__all__ = [
    "r2_score", "retrieval_accuracy", "retrieval_scores",
    "knn_regression",
    "FewShotRegressor", "fewshot_regression",
    "photometry_features", "photometry_baseline",
    "r2_table", "evaluate_properties", "labelled_embeddings", "evaluate_embeddings",
]
