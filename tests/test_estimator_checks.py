"""scikit-learn's own estimator checks (``parametrize_with_checks``) pass for every kind on the
dense network, with no check marked as an expected failure; tiny settings keep each fit to
milliseconds (the checks fit on tables of up to 100 rows of a few features)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from aelab.estimator import AutoencoderEstimator
from aelab.models import MODELS

KINDS = sorted(MODELS)


def _tiny(kind: str, **kw) -> AutoencoderEstimator:
    return AutoencoderEstimator(kind, net="dense", epochs=1, threads=1, net_options={"hidden": [8]}, **kw)


ESTIMATORS = [_tiny(kind) for kind in KINDS] + [
    _tiny("undercomplete", latent_dim=1),  # an explicit code size (the checks' tables have 2 features and up)
    _tiny("sparse", latent_dim=3, penalty="kl"),
    _tiny("variational", latent_dim=2, reconstruction="mse"),
]


def test_every_kind_is_checked():
    assert set(KINDS) >= {"undercomplete", "sparse", "contractive", "denoising", "variational", "codec"}


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_checks(estimator, check):
    check(estimator)
