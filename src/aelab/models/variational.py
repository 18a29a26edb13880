"""Variational autoencoder (Kingma & Welling 2014, "Auto-encoding variational Bayes";
beta-VAE: Higgins et al. 2017; importance-weighted bound: Burda, Grosse & Salakhutdinov
2016, "Importance weighted autoencoders", eq. 8).

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), prior p(z) = N(0, I), decoder p(x|z) with
mean x_hat = g(z). Loss, per image then averaged over the batch, in nats::

    loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z))           (= -ELBO when beta = 1)
    KL   = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)      (Kingma & Welling, appendix B)
    z    = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)             (the reparameterisation trick)

The likelihood follows ``reconstruction`` (summed over pixels, so the terms are nats per
image, unlike the per-pixel means of the other kinds):

- ``"bce"`` (default): Bernoulli, log p(x|z) = sum x log x_hat + (1 - x) log(1 - x_hat),
  computed from the decoder's logits (its final Sigmoid is split off), exact in float32;
- ``"mse"``: Gaussian N(x_hat, s^2), s = ``likelihood_scale``;
- ``"l1"``: Laplace(x_hat, b), b = ``likelihood_scale``.

Likelihoods in nats are only comparable with the literature on binary images: with
``binarize`` (default: on for Bernoulli) each batch is dynamically binarised,
x ~ Bernoulli(pixel intensity), as in Burda et al.; evaluate on a fixed binarisation of
the test set (:func:`binarize`). The logged terms: "reconstruction" (-log p(x|z), one
sample), "kl", "neg_elbo" (their sum) and "loss" (with beta).

Two training options, both off by default (they change the objective, not the model):

- ``train_samples`` = K > 1 trains on the importance-weighted bound instead of the ELBO
  (IWAE, Burda et al. 2016): loss = -log (1/K) sum_k w_k, log w_k = log p(x|z_k) +
  beta (log p(z_k) - log q(z_k|x)), z_k ~ q(z|x); logged as "neg_iw_bound" (beta = 1) next
  to the one-sample terms. It costs K decoder passes per image.
- ``kl_warmup`` = S > 0 ramps the KL weight linearly from 0 to ``beta`` over the first S
  training steps (KL annealing: Bowman et al. 2016; Sønderby et al. 2016), which keeps more
  latent units active. The step count is a buffer saved with the weights, so a resumed
  run continues the ramp; "neg_elbo" is always logged with the full KL.

The prior: ``prior="standard"`` (default) is N(0, I); ``prior="vamp"`` is the VampPrior
(Tomczak & Welling 2018, "VAE with a VampPrior"), the mixture of the encoder's own posteriors
at ``pseudo_inputs`` = P learned images u_p: p(z) = 1/P sum_p q(z|u_p). Its KL has no closed
form: the ELBO uses the one-sample estimate log q(z|x) - log p(z) at the reparameterised z.

The decoder: ``autoregressive=True`` (Bernoulli only) adds to the decoder's logits a linear
autoregressive term over the pixels in raster order (the visible-layer connections of
Gregor et al. 2014, "Deep AutoRegressive Networks"; a fully visible sigmoid belief net
conditioned on z)::

    p(x|z) = prod_i Bernoulli(x_i; sigmoid(g_i(z) + sum_{j < i} A_ij x_j))

a valid distribution over binary images whose pixels depend on the ones before them, not
only on z. The term depends on x alone, so the K samples of an image share it: the IW bound
costs one (D x D) product per image on top of the K decoder passes. A starts at zero (the
plain decoder), so ``--init`` from a plain run fine-tunes it. Decoding z alone (``decode``,
``forward``, ``sample``) runs pixel by pixel, feeding each pixel's probability to the ones
after it (a deterministic mean-field stand-in for drawing them).

``encode`` returns the posterior mean mu (the codes of docs/protocols.md); ``forward`` decodes it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets import build_net
from .base import Autoencoder, register_model

_EPS = 1e-6
_LOG_2PI = math.log(2 * math.pi)


def bernoulli_log_likelihood(x, x_hat, scale=None):
    """sum_pixels x log x_hat + (1 - x) log(1 - x_hat), per image; x_hat clamped to [1e-6, 1 - 1e-6]."""
    p = x_hat.clamp(_EPS, 1 - _EPS)
    return (x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1)


def bernoulli_log_likelihood_logits(x, logits):
    """The Bernoulli log-likelihood from logits l (x_hat = sigmoid(l)), exact where sigmoid saturates:
    sum_pixels x log sigmoid(l) + (1 - x) log sigmoid(-l) = -BCE-with-logits, per image."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_log_likelihood(x, x_hat, scale):
    """sum_pixels log N(x; x_hat, scale^2), per image."""
    return (-0.5 * ((x - x_hat) / scale) ** 2 - math.log(scale) - 0.5 * _LOG_2PI).flatten(1).sum(1)


def laplace_log_likelihood(x, x_hat, scale):
    """sum_pixels log Laplace(x; x_hat, scale), per image."""
    return (-(x - x_hat).abs() / scale - math.log(2 * scale)).flatten(1).sum(1)


LIKELIHOODS = {"bce": bernoulli_log_likelihood, "mse": gaussian_log_likelihood, "l1": laplace_log_likelihood}
LIKELIHOOD_NAMES = {"bce": "Bernoulli", "mse": "Gaussian", "l1": "Laplace"}


def split_final_sigmoid(decoder: nn.Module) -> bool:
    """Replace the decoder's final Sigmoid (before any reshaping layer) by the identity, so
    it outputs logits; True when there was one. No weights change."""
    if not isinstance(decoder, nn.Sequential):
        return False
    for i in reversed(range(len(decoder))):
        if isinstance(decoder[i], nn.Sigmoid):
            decoder[i] = nn.Identity()
            return True
        if not isinstance(decoder[i], (nn.Unflatten, nn.Flatten, nn.Identity)):
            return False
    return False


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def log_normal(z: torch.Tensor, mu, logvar) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last axis."""
    return (-0.5 * (_LOG_2PI + logvar + (z - mu) ** 2 / logvar.exp())).sum(-1)


def log_normal_mixture(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/P) sum_p N(z; mu_p, diag exp(logvar_p)) for z (..., L) and components (P, L),
    with the squares expanded into matrix products: (..., P) terms, never (..., P, L)."""
    inv = torch.exp(-logvar)                                   # (P, L)
    flat = z.reshape(-1, z.shape[-1])
    quad = (flat * flat) @ inv.T - 2.0 * flat @ (mu * inv).T + (mu * mu * inv).sum(1)  # (N, P)
    log_comp = -0.5 * (quad + logvar.sum(1) + z.shape[-1] * _LOG_2PI)
    out = torch.logsumexp(log_comp, 1) - math.log(mu.shape[0])
    return out.reshape(z.shape[:-1])


def binarize(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed Bernoulli draw of ``x`` (pixel intensities as probabilities), for evaluation in nats."""
    return torch.bernoulli(x, generator=torch.Generator(device=x.device).manual_seed(seed))


@register_model("variational")
class VariationalAutoencoder(Autoencoder):
    """Gaussian posterior, standard normal prior, reparameterised; loss = -ELBO (beta-weighted KL)."""

    net_defaults = {"latent_dim": 32, "code_activation": "none"}
    sized = True  # the prior is over codes of the built size

    def __init__(self, input_shape, net="conv", net_options=None, reconstruction: str = "bce",
                 beta: float = 1.0,                # weight of the KL term (beta-VAE); 1 = the ELBO
                 likelihood_scale: float = 0.1,    # Gaussian std / Laplace scale of p(x|z) (mse / l1 only)
                 binarize: bool | None = None,     # dynamic binarisation; None = on for bce only
                 train_samples: int = 1,           # K of the training objective; > 1: the IWAE bound
                 kl_warmup: int = 0,               # training steps over which beta rises from 0 (0: none)
                 prior: str = "standard",          # "standard" N(0, I) or "vamp" (Tomczak & Welling 2018)
                 pseudo_inputs: int = 500,         # the VampPrior's learned images P
                 autoregressive: bool = False):    # add the pixels' linear autoregressive term to p(x|z)
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
        if reconstruction not in LIKELIHOODS:
            raise ConfigError(f"the variational kind needs a likelihood, expected reconstruction "
                              f"{', '.join(LIKELIHOODS)}, found {reconstruction!r}; e.g. --loss bce")
        opts = {**self.net_defaults, **self.net_options}
        latent = opts.get("latent_dim")
        if not isinstance(latent, int) or latent < 1:
            raise ConfigError(f"the variational kind needs a vector code, expected latent_dim >= 1, found {latent!r}; "
                              "e.g. --net-option latent_dim=32")
        if opts.get("code_activation") not in (None, "none", "linear"):
            raise ConfigError("the variational encoder outputs mu and log-variance, which need code_activation=none, "
                              f"found {opts['code_activation']!r}; drop the option")
        if not beta >= 0:
            raise ConfigError(f"expected beta >= 0, found {beta}")
        if not likelihood_scale > 0:
            raise ConfigError(f"expected likelihood_scale > 0, found {likelihood_scale}")
        if binarize not in (None, True, False):
            raise ConfigError(f"expected binarize true, false or null, found {binarize!r}")
        if isinstance(train_samples, bool) or not isinstance(train_samples, int) or train_samples < 1:
            raise ConfigError(f"expected train_samples an integer >= 1, found {train_samples!r}; "
                              "e.g. --option train_samples=5 (1 = the ELBO)")
        if isinstance(kl_warmup, bool) or not isinstance(kl_warmup, int) or kl_warmup < 0:
            raise ConfigError(f"expected kl_warmup an integer number of steps >= 0, found {kl_warmup!r}; "
                              "e.g. --option kl_warmup=10000 (0 = none)")
        if prior not in ("standard", "vamp"):
            raise ConfigError(f"expected prior standard or vamp, found {prior!r}; e.g. --option prior=vamp")
        if isinstance(pseudo_inputs, bool) or not isinstance(pseudo_inputs, int) or pseudo_inputs < 1:
            raise ConfigError(f"expected pseudo_inputs an integer >= 1, found {pseudo_inputs!r}; "
                              "e.g. --option pseudo_inputs=500")
        if autoregressive not in (True, False):
            raise ConfigError(f"expected autoregressive true or false, found {autoregressive!r}")
        if autoregressive and reconstruction != "bce":
            raise ConfigError(f"autoregressive needs the Bernoulli likelihood (reconstruction=bce), found "
                              f"reconstruction={reconstruction!r}; drop one of the two options")
        # the same network with twice the code: the encoder's output is (mu, logvar)
        self.encoder = build_net(net, self.input_shape, **{**opts, "latent_dim": 2 * latent}).encoder
        # the decoder outputs logits when its final Sigmoid can be split off: exact Bernoulli nats
        # and gradients where the sigmoid saturates in float32 (|logit| > ~17)
        self.decoder_logits = split_final_sigmoid(self.decoder)
        self.latent_dim = latent
        self.beta = float(beta)
        self.likelihood_scale = float(likelihood_scale)
        self.binarize = binarize
        self.train_samples = int(train_samples)
        self.kl_warmup = int(kl_warmup)
        self.prior = prior
        self.pseudo_inputs = int(pseudo_inputs)
        if prior == "vamp":  # the pseudo-inputs as logits: u = sigmoid(v) stays an image in [0, 1]
            gen = torch.Generator().manual_seed(0)
            self.pseudo_logits = nn.Parameter(-1.0 + 0.5 * torch.randn((self.pseudo_inputs,) + self.input_shape,
                                                                       generator=gen))
        self.autoregressive = bool(autoregressive)
        if self.autoregressive:  # A's strictly lower triangle, row by row (pixel i sees pixels j < i)
            d = math.prod(self.input_shape)
            self.ar_lower = nn.Parameter(torch.zeros(d * (d - 1) // 2))
            # where those entries sit in A, built once (not saved: the image shape fixes it)
            self.register_buffer("ar_index", torch.tril_indices(d, d, offset=-1), persistent=False)
        if self.kl_warmup:  # training steps taken, saved with the weights so a resumed run continues the ramp
            self.register_buffer("warmup_step", torch.zeros((), dtype=torch.long))

    @property
    def binarizes(self) -> bool:
        return self.reconstruction == "bce" if self.binarize is None else bool(self.binarize)

    @property
    def likelihood(self) -> str:
        """The likelihood in words, for output next to figures in nats."""
        name = LIKELIHOOD_NAMES[self.reconstruction]
        scale = "" if self.reconstruction == "bce" else f" (scale {self.likelihood_scale:g})"
        return name + scale + (" on dynamically binarised images" if self.binarizes else "")

    # -- the contract --------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (N, latent_dim)."""
        self.check_input(x)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x):
        return self.posterior(x)[0]

    def decode(self, z):
        """The mean of p(x|z), in [0, 1] (autoregressive: the mean-field decode, pixel by pixel)."""
        out = self.decoder(z)
        if self.autoregressive:
            return self._decode_autoregressive(out)
        return torch.sigmoid(out) if self.decoder_logits else out

    @torch.no_grad()
    def _decode_autoregressive(self, logits: torch.Tensor) -> torch.Tensor:
        """p_i = sigmoid(g_i + sum_{j < i} A_ij p_j), i in raster order, from the decoder's logits g."""
        g = logits.flatten(1)
        a = self.ar_matrix()
        p = torch.zeros_like(g)
        for i in range(g.shape[1]):
            p[:, i] = torch.sigmoid(g[:, i] + p[:, :i] @ a[i, :i])
        return p.reshape(logits.shape[0], *self.input_shape)

    def ar_matrix(self) -> torch.Tensor:
        """A (D, D), zero on and above the diagonal, from its stored lower triangle."""
        d = math.prod(self.input_shape)
        return self.ar_lower.new_zeros(d, d).index_put(tuple(self.ar_index), self.ar_lower)

    def autoregressive_logits(self, x: torch.Tensor) -> torch.Tensor:
        """sum_{j < i} A_ij x_j for every pixel i of each image, (N, D)."""
        return x.flatten(1) @ self.ar_matrix().T

    def log_likelihood(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image (nats), from the mean x_hat = decode(z)."""
        return LIKELIHOODS[self.reconstruction](x, x_hat, self.likelihood_scale)

    def log_likelihood_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image (nats) for images x (B, C, H, W) and draws z (K, B, L): (K, B);
        from the logits when the decoder gives them."""
        k, b = z.shape[:2]
        if self.autoregressive:  # the term of x is computed once and shared by the K draws
            logits = self.decoder(z.reshape(k * b, -1)).reshape(k, b, -1) + self.autoregressive_logits(x)
            return bernoulli_log_likelihood_logits(x.flatten(1).expand(k, b, -1).flatten(0, 1),
                                                   logits.flatten(0, 1)).reshape(k, b)
        x_rep = x.expand((k,) + tuple(x.shape)).reshape(-1, *x.shape[1:])  # (K * B, C, H, W)
        z = z.reshape(k * b, -1)
        if self.decoder_logits and self.reconstruction == "bce":
            return bernoulli_log_likelihood_logits(x_rep, self.decoder(z)).reshape(k, b)
        return self.log_likelihood(x_rep, self.decode(z)).reshape(k, b)

    def adapt_initial_state(self, state: dict) -> dict:
        """A plain run's weights start an autoregressive one with A = 0 (the same likelihood)."""
        if self.autoregressive and "ar_lower" not in state:
            state = {**state, "ar_lower": torch.zeros_like(self.ar_lower)}
        return state

    def prior_components(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The VampPrior's (mu_p, logvar_p), each (P, L): q(z|u_p) at the pseudo-inputs
        u_p = sigmoid(v_p); None for the standard prior."""
        if self.prior == "standard":
            return None
        return self.posterior(torch.sigmoid(self.pseudo_logits))

    def log_prior(self, z: torch.Tensor, components=None) -> torch.Tensor:
        """log p(z) over the last axis of z (..., L): N(0, I), or the VampPrior's mixture
        (``components``: :meth:`prior_components` computed once by a caller that loops)."""
        if self.prior == "standard":
            return log_normal(z, 0.0, torch.zeros_like(z))
        return log_normal_mixture(z, *(components if components is not None else self.prior_components()))

    def loss(self, x_in, x_target):
        if self.binarizes:  # one uniform draw per pixel, shared by input and target
            u = torch.rand_like(x_target)
            x_in, x_target = (u < x_in).to(x_in.dtype), (u < x_target).to(x_target.dtype)
        mu, logvar = self.posterior(x_in)
        beta = self.current_beta()
        if self.train_samples == 1:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
            kl = (kl_standard_normal(mu, logvar) if self.prior == "standard"
                  else log_normal(z, mu, logvar) - self.log_prior(z)).mean()  # VampPrior: one-sample estimate
            rec = -self.log_likelihood_z(x_target, z[None]).mean()
            return {"reconstruction": rec, "kl": kl, "neg_elbo": rec + kl, "loss": rec + beta * kl}
        # IWAE (Burda et al. 2016, eq. 8): -log (1/K) sum_k w_k, log w_k = log p(x|z_k) + beta log p(z_k)/q(z_k|x)
        k = self.train_samples
        z = mu + torch.exp(0.5 * logvar) * torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device)
        log_px = self.log_likelihood_z(x_target, z)  # (K, B)
        log_ratio = self.log_prior(z) - log_normal(z, mu, logvar)
        kl = -log_ratio.mean()  # the one-sample KL estimate, averaged over the K samples
        log_k = math.log(k)
        iw = -(torch.logsumexp(log_px + log_ratio, 0) - log_k).mean()
        loss = iw if beta == 1.0 else -(torch.logsumexp(log_px + beta * log_ratio, 0) - log_k).mean()
        rec = -log_px.mean()
        return {"reconstruction": rec, "kl": kl, "neg_elbo": rec + kl, "neg_iw_bound": iw, "loss": loss}

    def current_beta(self) -> float:
        """The KL weight of this training step: ``beta``, ramped up linearly from 0 over the
        first ``kl_warmup`` training steps (Sønderby et al. 2016, "Ladder variational
        autoencoders"; Bowman et al. 2016); counts a step on each training-mode call."""
        if not self.kl_warmup:
            return self.beta
        step = int(self.warmup_step)
        if self.training and torch.is_grad_enabled():
            self.warmup_step += 1
        return self.beta * min(1.0, step / self.kl_warmup)

    # -- generation and likelihood ----------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from z ~ p(z) (the decoder's means), (n, C, H, W): N(0, I), or
        for the VampPrior a pseudo-input p drawn uniformly, then z ~ q(z|u_p)."""
        device = next(self.parameters()).device
        z = torch.randn((n, self.latent_dim), generator=generator).to(device)
        if self.prior == "vamp":
            mu_p, logvar_p = self.prior_components()
            pick = torch.randint(self.pseudo_inputs, (n,), generator=generator).to(device)
            z = mu_p[pick] + torch.exp(0.5 * logvar_p[pick]) * z
        return self.decode(z)

    @torch.no_grad()  # an evaluation: without it every chunk's graph is kept (24 GB at K = 1000 on 10,000 images)
    def nll_bounds(self, x: torch.Tensor, samples: int = 1000, seed: int = 0,
                   budget: int = 4_000_000) -> dict[str, torch.Tensor]:
        """Per image, in nats, from the same ``samples`` = K draws z_k ~ q(z|x):

        - ``"iw"``: -log (1/K) sum_k w_k, w_k = p(x|z_k) p(z_k) / q(z_k|x): an upper bound
          on -log p(x) that tightens as K grows (Burda et al. 2016);
        - ``"neg_elbo"``: -(1/K) sum_k log w_k, a Monte Carlo -ELBO; by Jensen's inequality
          never below ``"iw"``, and equal to it at K = 1.

        ``x`` is used as given: binarise it first (:func:`binarize`) for Bernoulli nats.
        ``budget`` caps the decoded values held at once (K x images x pixels).
        """
        if samples < 1:
            raise ConfigError(f"expected samples >= 1, found {samples}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        pixels = math.prod(self.input_shape)
        k_chunk = max(1, min(samples, budget // pixels))
        n_chunk = max(1, budget // (k_chunk * pixels))
        iw, elbo = [], []
        components = self.prior_components()  # once: the pseudo-inputs do not change here
        for i in range(0, len(x), n_chunk):
            xb = x[i:i + n_chunk].to(device)
            mu, logvar = self.posterior(xb)  # (B, L)
            log_w = []
            for k in range(0, samples, k_chunk):
                kk = min(k_chunk, samples - k)
                eps = torch.randn((kk,) + tuple(mu.shape), generator=gen).to(device)  # (k, B, L)
                z = mu + torch.exp(0.5 * logvar) * eps
                log_px = self.log_likelihood_z(xb, z)  # (k, B)
                log_w.append(log_px + self.log_prior(z, components) - log_normal(z, mu, logvar))
            log_w = torch.cat(log_w)  # (K, B)
            iw.append(-(torch.logsumexp(log_w, 0) - math.log(samples)).cpu())
            elbo.append(-log_w.mean(0).cpu())
        self.train(was_training)
        return {"iw": torch.cat(iw), "neg_elbo": torch.cat(elbo)}
