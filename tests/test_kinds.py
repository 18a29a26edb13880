"""The five kinds: registry-parametrised contract tests, and every penalty against an
independent computation (NumPy formulas, torch.autograd.functional.jacobian,
torch.distributions)."""

import math
import re

import numpy as np
import pytest
import torch
from torch import distributions as D

from aelab import runs
from aelab.errors import ConfigError
from aelab.losses import RECONSTRUCTION_LOSSES
from aelab.models import MODELS, build_model
from aelab.models import contractive as cae
from aelab.models import sparse as sae
from aelab.models import variational as vae

KINDS = sorted(MODELS)
NETS = ["dense", "conv"]
SHAPES = [(1, 12, 12), (3, 13, 10)]  # grey square, and colour with odd sizes

# the allowed values of string options, to pick a different one
CHOICES = {"reconstruction": RECONSTRUCTION_LOSSES, "penalty": tuple(sae.PENALTIES),
           "jacobian": ("auto", "autograd", "projection"), "prior": ("channel", "element")}
KIND_CHOICES = {("variational", "prior"): ("standard", "vamp")}  # a name two kinds use differently
# options that only act in some setting: the other options that make them act
CONTEXT = {("sparse", "sparsity_target"): {"penalty": "kl"},
           ("variational", "likelihood_scale"): {"reconstruction": "mse"},
           ("contractive", "projections"): {"jacobian": "projection"},
           ("variational", "pseudo_inputs"): {"prior": "vamp"}}
# options that by definition do nothing on some network: checked to change nothing there
INERT = {("codec", "prior", "dense"),  # a vector code: each element is its own channel already
         ("codec", "slices", "dense"), ("codec", "slices", "conv")}  # only prior=context on a feature map:
# tests/test_codec_context.py::test_options_and_bad_slices checks that it acts there
# options whose new weights start at zero, so that the loss is the same until they move
STARTS_AT_ZERO = {("variational", "autoregressive"): "ar_lower"}


def _loss(kind, net, shape, seed=1, **options):
    torch.manual_seed(0)
    model = build_model(kind, shape, net=net, **options)
    x = torch.rand((6,) + shape, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(seed)  # the kinds that draw (VAE, projection) draw from here
    return model, model.loss(x, x)


def _other(name, value, kind=None):
    choices = KIND_CHOICES.get((kind, name), CHOICES.get(name))
    if choices:
        return next(c for c in choices if c != value)
    if value is None or isinstance(value, bool):
        return False if value is None else not value
    if isinstance(value, int):
        return value + 2
    return value * 3 + 0.1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("kind", KINDS)
def test_contract_every_kind_and_net(kind, net, shape, tmp_path):
    model, terms = _loss(kind, net, shape)
    x = torch.rand((4,) + shape)
    assert model(x).shape == x.shape
    assert model.codes(x).shape[0] == 4 and model.codes(x).ndim == 2
    assert "loss" in terms and len(terms) >= 2, "every term by name plus their sum"
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # same seed, same loss
    _, again = _loss(kind, net, shape)
    assert all(torch.equal(terms[k].detach(), again[k]) for k in terms)
    # save / load: bit-identical outputs and loss
    runs.save_model(model, tmp_path)
    loaded = runs.load_model(tmp_path)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    torch.manual_seed(5)
    a = model.loss(x, x)["loss"]
    torch.manual_seed(5)
    assert torch.equal(a, loaded.loss(x, x)["loss"])
    assert loaded.config() == model.config()


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_hyper_parameter_changes_the_loss(kind, net):
    shape = (1, 12, 12)
    names = MODELS[kind].option_names()
    assert names, "each kind has hyper-parameters"
    for name in names:
        context = CONTEXT.get((kind, name), {})
        model, base = _loss(kind, net, shape, **context)
        value = getattr(model, name)
        _, changed = _loss(kind, net, shape, **{**context, name: _other(name, value, kind)})
        if (kind, name) in STARTS_AT_ZERO:  # the same loss at zero; a different one once the weights move
            assert torch.equal(base["loss"], changed["loss"]), f"{kind}.{name} should start as the plain model"
            torch.manual_seed(0)
            other = build_model(kind, shape, net=net, **{**context, name: _other(name, value, kind)})
            with torch.no_grad():
                getattr(other, STARTS_AT_ZERO[kind, name]).normal_(0, 0.5)
            torch.manual_seed(1)
            changed = other.loss(torch.rand((6,) + shape, generator=torch.Generator().manual_seed(3)),
                                 torch.rand((6,) + shape, generator=torch.Generator().manual_seed(3)))
        if (kind, name, net) in INERT:
            assert torch.equal(base["loss"], changed["loss"]), f"{kind}.{name} should not act on a {net} network"
            continue
        assert not torch.equal(base["loss"], changed["loss"]), f"{kind}.{name} = {value!r} does not act on the loss"


# -- undercomplete -------------------------------------------------------------------------

def test_undercomplete_refuses_a_wide_code():
    with pytest.raises(ConfigError, match="expected an undercomplete code.*found 200.*lower latent_dim"):
        build_model("undercomplete", (1, 12, 12), net="dense", net_options={"latent_dim": 200})
    assert build_model("undercomplete", (1, 12, 12), net="dense").code_shape == (32,)


# -- sparse --------------------------------------------------------------------------------

def test_sparse_penalties_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.001, 0.999, (16, 7)).astype(np.float64)
    assert sae.l1_penalty(torch.from_numpy(a - 0.5)).item() == pytest.approx(np.abs(a - 0.5).sum(1).mean(), rel=1e-12)
    rho = 0.05
    rho_hat = a.mean(0)
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    assert sae.kl_penalty(torch.from_numpy(a), rho).item() == pytest.approx(kl, rel=1e-12)
    # KL(rho || rho) = 0 and the penalty grows away from rho
    assert sae.kl_penalty(torch.full((4, 3), rho, dtype=torch.float64), rho).item() == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("penalty", ["l1", "kl"])
def test_sparse_loss_is_reconstruction_plus_weighted_penalty(penalty):
    torch.manual_seed(0)
    model = build_model("sparse", (1, 12, 12), net="dense", penalty=penalty, sparsity_weight=0.3)
    assert model.net_options["code_activation"] == sae.PENALTIES[penalty][1]
    x = torch.rand(8, 1, 12, 12)
    terms = model.loss(x, x)
    a = model.encode(x).detach().double().numpy()
    if penalty == "l1":
        expected = np.abs(a).sum(1).mean()
    else:
        r = a.mean(0)
        expected = np.sum(0.05 * np.log(0.05 / r) + 0.95 * np.log(0.95 / (1 - r)))
    assert terms["sparsity"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["reconstruction"].item() + 0.3 * expected, rel=1e-5)


def test_sparse_kl_needs_a_sigmoid_code():
    with pytest.raises(ConfigError, match="kl penalty needs code activations in \\(0, 1\\).*relu"):
        build_model("sparse", (1, 12, 12), net="dense", penalty="kl", net_options={"code_activation": "relu"})
    with pytest.raises(ConfigError, match="penalty one of l1, kl"):
        build_model("sparse", (1, 12, 12), penalty="l2")


# -- contractive -------------------------------------------------------------------------

def _reference_sq(encode, x):
    """||J||_F^2 per image with torch.autograd.functional.jacobian, one image at a time."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: encode(v[None]).flatten(), xi)
        out.append(jac.pow(2).sum())
    return torch.stack(out)


def test_contractive_closed_form_matches_autograd_jacobian():
    torch.manual_seed(0)
    model = build_model("contractive", (1, 8, 8), net="dense",
                        net_options={"hidden": [], "code_activation": "sigmoid", "latent_dim": 5})
    assert model.jacobian_method == "closed_form"
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    model.double()
    h = model.encode(x)
    closed = cae.closed_form_sq(h, cae.one_layer_sigmoid(model.encoder).weight)
    torch.testing.assert_close(closed, _reference_sq(model.encode, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("net", NETS)
def test_contractive_exact_autograd_matches_jacobian(net):
    torch.manual_seed(0)
    model = build_model("contractive", (1, 12, 12), net=net, net_options={"latent_dim": 6}, jacobian="autograd").double()
    x = torch.rand(5, 1, 12, 12, dtype=torch.float64)
    ref = _reference_sq(model.encode, x)
    torch.testing.assert_close(cae.jacobian_frobenius_sq(model.encode, x, batch_size=2), ref, rtol=1e-10, atol=1e-12)
    terms = model.loss(x, x)
    assert terms["contractive"].item() == pytest.approx(ref.mean().item(), rel=1e-10)


@pytest.mark.parametrize("net", NETS)
def test_contractive_projection_is_unbiased(net):
    torch.manual_seed(0)
    model = build_model("contractive", (1, 12, 12), net=net, jacobian="projection", projections=4000).double()
    assert model.jacobian_method == "projection"
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    ref = _reference_sq(model.encode, x)
    torch.manual_seed(1)
    est = model.loss(x, x)["contractive"].item()  # the mean over 4000 draws of v per image
    assert est == pytest.approx(ref.mean().item(), rel=0.05)
    assert est != pytest.approx(ref.mean().item(), rel=1e-6), "an estimate, not the exact value"


def test_contractive_penalty_in_validation_and_trains_down():
    """The penalty is computed under no_grad (the trainer's validation) and lambda shrinks ||J||."""
    from aelab.metrics import jacobian_norm
    from aelab.train import TrainConfig, fit

    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    norms = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model("contractive", (1, 8, 8), net="dense", net_options={"latent_dim": 8},
                            contractive_weight=weight)
        with torch.no_grad():
            terms = model.loss(x, x)
        assert torch.isfinite(terms["contractive"]) and not terms["loss"].requires_grad
        fit(model, x, None, TrainConfig(epochs=15, batch_size=16, progress=False))
        norms[weight] = jacobian_norm(model, x).mean().item()
    assert norms[1.0] < 0.5 * norms[0.0], norms


def test_contractive_closed_form_needs_its_encoder():
    with pytest.raises(ConfigError, match="closed_form needs a one-layer sigmoid encoder"):
        build_model("contractive", (1, 8, 8), net="dense", jacobian="closed_form")


# -- variational ------------------------------------------------------------------------

def test_vae_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    p = D.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(vae.kl_standard_normal(mu, logvar), D.kl_divergence(q, p).sum(1))
    z = torch.randn(7, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(vae.log_normal(z, mu, logvar), q.log_prob(z).sum(1))


def test_vae_likelihoods_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x_hat = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64)
    xb = torch.bernoulli(x, generator=g)
    torch.testing.assert_close(vae.bernoulli_log_likelihood(xb, x_hat), D.Bernoulli(probs=x_hat).log_prob(xb).sum((1, 2, 3)))
    torch.testing.assert_close(vae.gaussian_log_likelihood(x, x_hat, 0.3), D.Normal(x_hat, 0.3).log_prob(x).sum((1, 2, 3)))
    torch.testing.assert_close(vae.laplace_log_likelihood(x, x_hat, 0.2), D.Laplace(x_hat, 0.2).log_prob(x).sum((1, 2, 3)))


def test_vae_bernoulli_from_logits_is_exact_where_sigmoid_saturates():
    logits = torch.tensor([[-40.0, -5.0, 0.0, 5.0, 40.0]])
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    ref = D.Bernoulli(logits=logits.double()).log_prob(x.double()).sum(1)
    torch.testing.assert_close(vae.bernoulli_log_likelihood_logits(x, logits).double(), ref)
    assert ref.item() < -80  # the probability path clamps each wrong pixel to log(1e-6) = -13.8
    for net in NETS:  # both networks' decoders end in a Sigmoid the VAE splits off
        model = build_model("variational", (1, 12, 12), net=net)
        z = torch.randn(3, 32)
        assert model.decoder_logits and torch.equal(model.decode(z), torch.sigmoid(model.decoder(z)))


def test_vae_loss_terms_are_the_negative_elbo():
    torch.manual_seed(0)
    model = build_model("variational", (1, 8, 8), net="dense", beta=4.0, binarize=False)
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(7)
    terms = model.loss(x, x)
    torch.manual_seed(7)
    mu, logvar = model.posterior(x)
    eps = torch.randn_like(mu)
    assert model.decoder_logits
    logits = model.decoder(mu + torch.exp(0.5 * logvar) * eps)
    rec = -D.Bernoulli(logits=logits, validate_args=False).log_prob(x).sum((1, 2, 3)).mean()
    kl = D.kl_divergence(D.Normal(mu, torch.exp(0.5 * logvar)), D.Normal(0.0, 1.0)).sum(1).mean()
    assert terms["reconstruction"].item() == pytest.approx(rec.item(), rel=1e-5)
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["neg_elbo"].item() == pytest.approx(rec.item() + kl.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(rec.item() + 4.0 * kl.item(), rel=1e-5)
    assert torch.equal(model.encode(x), mu) and torch.equal(model.codes(x), mu.detach())


def _trained_vae():
    from aelab.train import TrainConfig, fit

    torch.manual_seed(0)
    x = (torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    model = build_model("variational", (1, 8, 8), net="dense", net_options={"latent_dim": 3, "hidden": [32]})
    fit(model, x, None, TrainConfig(epochs=3, batch_size=32, progress=False))
    return model.eval(), x


def test_vae_importance_weighted_bound():
    model, x = _trained_vae()
    xb = x[:16]
    for k in (1, 5, 200):
        b = model.nll_bounds(xb, samples=k, seed=k, budget=5000)  # a small budget exercises the chunking
        assert b["iw"].shape == (16,)
        assert (b["iw"] <= b["neg_elbo"] + 1e-4).all(), "Jensen: the IW bound is never above the -ELBO"
        if k == 1:
            torch.testing.assert_close(b["iw"], b["neg_elbo"])
    # K = 1 equals the -ELBO in expectation: the mean over many draws vs the analytic-KL -ELBO
    iw1 = torch.stack([model.nll_bounds(xb, samples=1, seed=s)["iw"] for s in range(400)]).mean(0)
    with torch.no_grad():
        mu, logvar = model.posterior(xb)
        g = torch.Generator().manual_seed(99)
        rec = torch.stack([-model.log_likelihood(xb, model.decode(mu + torch.exp(0.5 * logvar) *
                                                                  torch.randn(mu.shape, generator=g)))
                           for _ in range(400)]).mean(0)
        neg_elbo = rec + vae.kl_standard_normal(mu, logvar)
    assert iw1.mean().item() == pytest.approx(neg_elbo.mean().item(), rel=0.01)
    # more samples, a tighter bound than the -ELBO's expectation (on average over images)
    assert model.nll_bounds(xb, samples=200)["iw"].mean() < iw1.mean() - 0.05


def test_vae_sample_binarize_and_errors():
    model, x = _trained_vae()
    s = model.sample(10, generator=torch.Generator().manual_seed(0))
    assert s.shape == (10, 1, 8, 8) and 0 <= s.min() and s.max() <= 1
    b = vae.binarize(torch.full((2, 1, 8, 8), 0.3))
    assert set(b.unique().tolist()) <= {0.0, 1.0} and torch.equal(b, vae.binarize(torch.full((2, 1, 8, 8), 0.3)))
    assert "Bernoulli" in model.likelihood and "binarised" in model.likelihood
    with pytest.raises(ConfigError, match="code_activation=none"):
        build_model("variational", (1, 8, 8), net="dense", net_options={"code_activation": "relu"})
    with pytest.raises(ConfigError, match="needs a vector code"):
        build_model("variational", (1, 8, 8), net="conv", net_options={"latent_dim": None})


@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("net", NETS)
def test_vae_iwae_loss_matches_torch_distributions(net, beta):
    """train_samples = K > 1: the loss is -log (1/K) sum_k w_k, computed here independently with
    torch.distributions from the same draws (beta scales log p(z)/q(z|x))."""
    k, shape = 4, (3, 9, 7)
    torch.manual_seed(0)
    model = build_model("variational", shape, net=net, binarize=False, train_samples=k, beta=beta)
    x = (torch.rand((5,) + shape, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    torch.manual_seed(7)
    terms = model.loss(x, x)
    torch.manual_seed(7)
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn((k,) + tuple(mu.shape))
        log_px = torch.stack([D.Bernoulli(logits=model.decoder(z[i]), validate_args=False).log_prob(x).sum((1, 2, 3))
                              for i in range(k)])
        ratio = D.Normal(0.0, 1.0).log_prob(z).sum(-1) - D.Normal(mu, std).log_prob(z).sum(-1)
        expect = -(torch.logsumexp(log_px + beta * ratio, 0) - math.log(k)).mean()
        iw = -(torch.logsumexp(log_px + ratio, 0) - math.log(k)).mean()
    assert terms["loss"].item() == pytest.approx(expect.item(), rel=1e-5)
    assert terms["neg_iw_bound"].item() == pytest.approx(iw.item(), rel=1e-5)
    assert terms["reconstruction"].item() == pytest.approx(-log_px.mean().item(), rel=1e-5)
    # Jensen: the K-sample bound is never above the mean of -log w over the same draws
    assert iw.item() <= -(log_px + ratio).mean().item()
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vamp_prior_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    z = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    mix = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(6, dtype=torch.float64)),
                              D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1))
    torch.testing.assert_close(vae.log_normal_mixture(z, mu, logvar), mix.log_prob(z))


@pytest.mark.parametrize("train_samples", [1, 3])
def test_vamp_prior_loss_and_bound_use_the_mixture_of_pseudo_posteriors(train_samples):
    """prior=vamp: log p(z) = log mean_p q(z|u_p) (Tomczak & Welling 2018), with u_p = sigmoid of
    the learned pseudo-inputs, in the training loss (ELBO with a one-sample KL, or the IWAE bound)
    and in nll_bounds; checked against torch.distributions from the same draws."""
    shape, k = (1, 8, 8), train_samples
    torch.manual_seed(0)
    model = build_model("variational", shape, net="dense", binarize=False, prior="vamp", pseudo_inputs=7,
                        train_samples=k, net_options={"latent_dim": 3, "hidden": [16]})
    assert model.pseudo_logits.shape == (7,) + shape
    x = (torch.rand((5,) + shape, generator=torch.Generator().manual_seed(1)) < 0.4).float()

    def log_w(z, mu, std):  # (K, B) from z (K, B, L)
        mu_p, logvar_p = model.posterior(torch.sigmoid(model.pseudo_logits))
        prior = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(7)),
                                    D.Independent(D.Normal(mu_p, torch.exp(0.5 * logvar_p)), 1))
        log_px = torch.stack([D.Bernoulli(logits=model.decoder(zi), validate_args=False).log_prob(x).sum((1, 2, 3))
                              for zi in z])
        return log_px, prior.log_prob(z) - D.Independent(D.Normal(mu, std), 1).log_prob(z)

    torch.manual_seed(7)
    terms = model.loss(x, x)
    torch.manual_seed(7)
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * (torch.randn_like(mu)[None] if k == 1 else torch.randn((k,) + tuple(mu.shape)))
        log_px, ratio = log_w(z, mu, std)
    if k == 1:
        assert terms["kl"].item() == pytest.approx(-ratio.mean().item(), rel=1e-5)
        assert terms["neg_elbo"].item() == pytest.approx(-(log_px + ratio).mean().item(), rel=1e-5)
    else:
        iw = -(torch.logsumexp(log_px + ratio, 0) - math.log(k)).mean()
        assert terms["neg_iw_bound"].item() == pytest.approx(iw.item(), rel=1e-5)
    terms["loss"].backward()
    assert model.pseudo_logits.grad is not None and model.pseudo_logits.grad.abs().sum() > 0, "the prior learns"
    # nll_bounds: the same draws as its own generator makes
    b = model.nll_bounds(x, samples=4, seed=3)
    with torch.no_grad():
        eps = torch.randn((4,) + tuple(mu.shape), generator=torch.Generator().manual_seed(3))
        log_px, ratio = log_w(mu + std * eps, mu, std)
    torch.testing.assert_close(b["iw"], -(torch.logsumexp(log_px + ratio, 0) - math.log(4)), rtol=1e-5, atol=1e-4)


def _autoregressive_vae(shape, **options):
    torch.manual_seed(0)
    model = build_model("variational", shape, net="dense", autoregressive=True, binarize=False,
                        net_options={"latent_dim": 2, "hidden": [8]}, **options)
    with torch.no_grad():
        model.ar_lower.normal_(0, 1.5)  # a strong dependence on the pixels before
    return model


def test_vae_autoregressive_decoder_is_a_normalised_raster_order_chain():
    """autoregressive=True: p(x|z) = prod_i Bernoulli(x_i; sigmoid(g_i(z) + sum_{j<i} A_ij x_j)),
    checked against torch.distributions pixel by pixel; it sums to 1 over every binary image,
    and pixel i's logit depends on pixels j < i only (its Jacobian is strictly lower triangular)."""
    shape = (1, 2, 3)
    model = _autoregressive_vae(shape)
    images = torch.tensor([[(n >> i) & 1 for i in range(6)] for n in range(64)], dtype=torch.float32)
    images = images.reshape(64, *shape)
    z = torch.randn(3, 64, 2, generator=torch.Generator().manual_seed(1))  # (K, B, L): 3 draws per image
    with torch.no_grad():
        log_px = model.log_likelihood_z(images, z)
        g = model.decoder(z.reshape(-1, 2)).reshape(3, 64, 6)
    a, flat = model.ar_matrix().detach(), images.flatten(1)
    assert a[1, 0] == model.ar_lower[0] and a[2, 0] == model.ar_lower[1] and a[2, 1] == model.ar_lower[2], "row by row"
    ref = sum(D.Bernoulli(logits=g[..., i] + flat[:, :i] @ a[i, :i]).log_prob(flat[:, i]) for i in range(6))
    torch.testing.assert_close(log_px, ref)
    same_z = z[:, :1].expand(3, 64, 2)  # one z for every image: the 64 probabilities sum to 1
    with torch.no_grad():
        total = model.log_likelihood_z(images, same_z).exp().sum(1)
    torch.testing.assert_close(total, torch.ones(3))
    jac = torch.autograd.functional.jacobian(lambda v: model.autoregressive_logits(v.reshape(1, *shape))[0],
                                             torch.rand(6))
    below = torch.ones(6, 6, dtype=torch.bool).tril(-1)
    assert (jac[~below] == 0).all() and (jac[below] != 0).all()


def test_vae_autoregressive_bound_decode_and_init_from_a_plain_run(tmp_path):
    shape = (1, 4, 4)
    model = _autoregressive_vae(shape)
    x = (torch.rand((5,) + shape, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    # nll_bounds: the same draws as its own generator makes, the likelihood from the chain
    b = model.nll_bounds(x, samples=4, seed=3)
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn((4,) + tuple(mu.shape), generator=torch.Generator().manual_seed(3))
        log_w = (model.log_likelihood_z(x, z) + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 - D.Independent(D.Normal(mu, std), 1).log_prob(z))
    torch.testing.assert_close(b["iw"], -(torch.logsumexp(log_w, 0) - math.log(4)))
    # decode: p_i = sigmoid(g_i + sum_{j<i} A_ij p_j), pixel by pixel
    with torch.no_grad():
        g = model.decoder(mu).flatten(1)
        p = []
        for i in range(16):
            prev = torch.stack(p, 1) if p else torch.zeros(5, 0)
            p.append(torch.sigmoid(g[:, i] + prev @ model.ar_matrix()[i, :i]))
    torch.testing.assert_close(model.decode(mu), torch.stack(p, 1).reshape(5, *shape))
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3,) + shape
    # a plain run starts an autoregressive one at A = 0: the very same bound
    plain = build_model("variational", shape, net="dense", binarize=False, net_options={"latent_dim": 2, "hidden": [8]})
    runs.save_model(plain, tmp_path)
    state = model.adapt_initial_state(runs.load_model(tmp_path).state_dict())
    model.load_state_dict(state)
    assert torch.equal(model.ar_matrix(), torch.zeros(16, 16))
    torch.testing.assert_close(model.nll_bounds(x, samples=4, seed=3)["iw"], plain.nll_bounds(x, samples=4, seed=3)["iw"])
    with pytest.raises(ConfigError, match="autoregressive needs the Bernoulli likelihood"):
        build_model("variational", shape, net="dense", autoregressive=True, reconstruction="mse")


def test_vamp_prior_samples_from_the_pseudo_posteriors(tmp_path):
    torch.manual_seed(0)
    model = build_model("variational", (1, 8, 8), net="dense", prior="vamp", pseudo_inputs=2,
                        net_options={"latent_dim": 2, "hidden": [8]})
    with torch.no_grad():  # narrow pseudo-posteriors at 0 (weights zeroed): every sampled z is near 0, not N(0, I)
        last = [m for m in model.encoder if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, -20.0, -20.0]))
    samples = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 8, 8) and torch.isfinite(samples).all()
    torch.testing.assert_close(samples, model.decode(torch.zeros(6, 2)), atol=1e-3, rtol=0)
    runs.save_model(model, tmp_path)
    loaded = runs.load_model(tmp_path)
    assert loaded.prior == "vamp" and torch.equal(loaded.pseudo_logits, model.pseudo_logits)
    with pytest.raises(ConfigError, match="expected prior standard or vamp, found 'gauss'"):
        build_model("variational", (1, 8, 8), net="dense", prior="gauss")
    with pytest.raises(ConfigError, match="expected pseudo_inputs an integer >= 1, found 0"):
        build_model("variational", (1, 8, 8), net="dense", prior="vamp", pseudo_inputs=0)


def test_vae_kl_warmup_ramps_beta_over_training_steps(tmp_path):
    torch.manual_seed(0)
    model = build_model("variational", (1, 8, 8), net="dense", binarize=False, beta=2.0, kl_warmup=4)
    x = torch.rand(5, 1, 8, 8)
    for step in range(7):
        torch.manual_seed(step)
        terms = model.loss(x, x)
        weight = 2.0 * min(1.0, step / 4)  # 0, 0.5, 1, 1.5, 2, 2, 2
        assert terms["loss"].item() == pytest.approx(terms["reconstruction"].item() + weight * terms["kl"].item(),
                                                     rel=1e-6), step
        assert terms["neg_elbo"].item() == pytest.approx(terms["reconstruction"].item() + terms["kl"].item())
    assert int(model.warmup_step) == 7
    model.eval()  # validation does not advance the ramp, nor does a no-grad call
    model.loss(x, x)
    model.train()
    with torch.no_grad():
        model.loss(x, x)
    assert int(model.warmup_step) == 7
    runs.save_model(model, tmp_path)
    assert int(runs.load_model(tmp_path).warmup_step) == 7, "the ramp's position is saved with the weights"
    assert not hasattr(build_model("variational", (1, 8, 8), net="dense"), "warmup_step"), "no buffer when off"


@pytest.mark.parametrize("option, value, message", [
    ("train_samples", 0, "expected train_samples an integer >= 1, found 0"),
    ("train_samples", 2.5, "expected train_samples an integer >= 1, found 2.5"),
    ("kl_warmup", -1, "expected kl_warmup an integer number of steps >= 0, found -1"),
    ("kl_warmup", True, "expected kl_warmup an integer number of steps >= 0, found True")])
def test_vae_training_options_refuse_bad_values(option, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_model("variational", (1, 8, 8), net="dense", **{option: value})


def test_vae_binarises_only_for_bernoulli():
    torch.manual_seed(0)
    x = torch.full((4, 1, 8, 8), 0.5)
    for reconstruction, binarizes in (("bce", True), ("mse", False), ("l1", False)):
        model = build_model("variational", (1, 8, 8), net="dense", reconstruction=reconstruction)
        assert model.binarizes is binarizes
    assert build_model("variational", (1, 8, 8), net="dense", binarize=False).binarizes is False
    assert math.isfinite(build_model("variational", (1, 8, 8), net="dense").loss(x, x)["loss"].item())


@pytest.mark.parametrize("kind, options", [("variational", {}), ("contractive", {}),
                                           ("variational", {"train_samples": 3, "kl_warmup": 10})],
                         ids=["variational", "contractive", "variational-iwae-warmup"])
def test_resume_is_exact_for_kinds_that_draw_in_their_loss(kind, options, tmp_path):
    """The checkpoint holds torch's global RNG, from which the reparameterisation and the
    random projections draw (and the VAE's warm-up step count), so an interrupted run
    resumes bit-identically."""
    from aelab.train import TrainConfig, fit

    x = torch.rand(96, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=3, batch_size=16, progress=False, seed=5)

    def model(seed=0):
        torch.manual_seed(seed)
        return build_model(kind, (1, 12, 12), net="dense", **options)

    full = model()
    fit(full, x, None, cfg, run_dir=tmp_path / "full")
    part = model()
    fit(part, x, None, cfg, run_dir=tmp_path / "part", stop_after_steps=9)
    torch.manual_seed(1234)  # whatever happened to the global RNG since
    resumed = model(99)
    fit(resumed, x, None, cfg, run_dir=tmp_path / "part", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", KINDS)
def test_any_kind_trains_with_noise_against_the_clean_image(kind):
    from aelab.losses import reconstruction_loss
    from aelab.noise import parse_noise
    from aelab.train import TrainConfig, fit

    torch.manual_seed(0)
    model = build_model(kind, (1, 12, 12), net="dense")
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    for spec in ("gaussian:0.2", "saltpepper:0.1", "masking:0.25"):
        x_noisy = parse_noise(spec)(x, torch.Generator().manual_seed(1))
        torch.manual_seed(2)
        terms = model.loss(x_noisy, x)
        if not hasattr(model, "posterior"):  # deterministic decoders: the term is exactly the clean-target loss
            expected = reconstruction_loss(model(x_noisy), x, model.reconstruction)
            name = "distortion" if "distortion" in terms else "reconstruction"  # the codec's name for it
            assert terms[name].item() == pytest.approx(expected.item(), rel=1e-6)
        torch.manual_seed(2)
        assert terms["loss"].item() != model.loss(x, x)["loss"].item()
    hist = fit(model, x, x, TrainConfig(epochs=1, batch_size=4, noise="masking:0.25", progress=False))
    assert set(hist["train"]) == set(terms) and all(len(v) == 1 for v in hist["val"].values())
