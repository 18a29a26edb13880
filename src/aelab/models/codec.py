"""A learned image codec: transform, quantise, entropy-code (Balle, Laparra & Simoncelli
2017, "End-to-end optimized image compression"; the factorised density of Balle, Minnen,
Singh, Hwang & Johnston 2018, "Variational image compression with a scale hyperprior",
appendix 6.1).

An analysis transform y = g_a(x), a latent quantised to integers y_hat = round(y), a
synthesis transform x_hat = g_s(y_hat), and a learned density p of each latent channel,
shared by every position of that channel (the "factorised prior"). The byte stream
(:mod:`aelab.compression.stream`) range-codes y_hat under p, so -log2 p(y_hat) is its length in bits.

Training minimises, per batch (Balle et al. 2017, eq. 2 with the convention of CompressAI)::

    loss = rate / (H W) + lmbda * 255^2 * distortion            (bits per pixel + weighted MSE)
    rate = mean_batch sum_latents -log2 p_tilde(y_tilde)        (bits per image)
    distortion = mean_pixels (x - g_s(y_dec))^2                 (MSE of [0, 1] images)

- y_tilde = y + u, u ~ U(-1/2, 1/2): additive uniform noise, the differentiable stand-in
  for rounding; p_tilde = p * U(-1/2, 1/2), so p_tilde(v) = c(v + 1/2) - c(v - 1/2) with c
  the learned cumulative, which at integers is exactly the probability of the coded symbol.
- y_dec = y_hat with a straight-through gradient (``straight_through=True``, the default:
  "mixed quantisation", Minnen & Singh 2020, "Channel-wise autoregressive entropy models",
  section 3.1), or y_tilde (``straight_through=False``, Balle et al. 2017). The decoder
  then trains on the very values it decodes at test time.
- ``lmbda`` is the ``--lambda`` of the command line (``lambda`` is a Python keyword): the
  weight of the distortion; larger = more bytes, higher PSNR. ``reconstruction`` picks the
  distortion (default ``mse``, the one PSNR measures).

In eval mode (the trainer's validation) ``loss`` rounds instead of adding noise, so the
logged validation "rate" is the ideal code length of the stream, in bits per image.
Logged terms: "rate" (bits per image), "bpp" (bits per pixel), "distortion", "loss".

``prior`` says what one density models: ``"channel"`` (the papers' factorised prior: one
density per latent channel, shared by every position) or ``"element"`` (one density per
latent element, channel x position: still a factorised prior, tied to the image size,
for data where the statistics of a latent depend on where it sits; on Fashion-MNIST's
centred objects it costs ~11% fewer bytes for the same latents). For a vector code, as
the dense network's, the two are the same.
``"context"`` (:mod:`aelab.models.context`) is the channel-conditional model of Minnen &
Singh 2020 without a hyperprior: the channels are cut into ``slices``; slice 0 is coded
under element densities, each later slice under Gaussians whose means and scales a small
network predicts from the slices decoded before it (on Fashion-MNIST 14-15% fewer bytes than
the element prior at the same PSNR, docs/compression.md).
``aelab train --init`` of an element-prior run from a channel-prior one copies each
channel's density to every position; a context run takes slice 0's densities from either
(:meth:`LearnedCodec.adapt_initial_state`).

The density (appendix 6.1) of each channel is c(v) = sigmoid(f_K(... f_1(v))), with
f_k(v) = h_k(softplus(H_k) v + b_k), h_k(t) = t + tanh(a_k) tanh(t) (k < K), h_K the
identity (the sigmoid is applied last): positive matrices and tanh factors >= -1 make
every f_k increasing, so c is a valid cumulative distribution function. Filters (3, 3, 3).

The network is any of :mod:`aelab.nets` whose code is a vector (one density per unit) or a
feature map (one per channel); the kind's own is ``gdn``: strided 5x5 convolutions with
GDN (analysis) and transposed convolutions with inverse GDN (synthesis), as in Balle et
al. 2017/2018, built from the input shape (28 x 28 -> 14 -> 7 -> 4 with three stages).
GDN (Balle, Laparra & Simoncelli 2016, "Density modeling of images using a generalized
normalization transformation"): v_i = u_i / sqrt(beta_i + sum_j gamma_ij u_j^2), with
beta and gamma kept non-negative by the reparameterisation of Balle's tensorflow_compression
(also CompressAI's): stored as sqrt(value + 2^-36), bounded below.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses import reconstruction_loss
from ..nets import ClampST, NetPair, activation, halved, register_net, transpose_padding
from .base import Autoencoder, register_model
from .context import ChannelContext, gaussian_likelihood
from .layers import GDN

LIKELIHOOD_BOUND = 1e-9      # smallest probability of a latent in the rate term (as CompressAI)
LATENT_LIMIT = 2 ** 15 - 1   # |y_hat| is clamped here: the byte stream's escape codes reach this far
TABLE_RADIUS = 4096         # coding tables are searched over the integers -RADIUS..RADIUS
TABLE_TAIL = 2.0 ** -24     # probability mass cut from each tail of a density's table
TABLE_GRID = 2 ** 40        # table probabilities are integers: multiples of 1 / TABLE_GRID
TABLE_KEYS = ("table_lo", "table_sizes", "table_counts")  # the coding tables' buffers


# -- the transforms --------------------------------------------------------------------

class _RoundST(torch.autograd.Function):
    """round(v) forward (exactly the decoded value), identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, v):
        return torch.round(v).clamp(-LATENT_LIMIT, LATENT_LIMIT)

    @staticmethod
    def backward(ctx, grad):
        return grad


@register_net("gdn")
def gdn_net(input_shape, channels: int = 64, latent_channels: int = 64, stages: int = 3, kernel: int = 5,
            nonlinearity: str = "gdn", latent_dim: int | None = None, code_activation: str | None = "none") -> NetPair:
    """Balle et al.'s transforms, sized by ``input_shape`` (C, H, W):

    analysis:  [Conv2d(k, s2, p k//2) + GDN] x (stages - 1), Conv2d(k, s2) to ``latent_channels``
    synthesis: [ConvTranspose2d(k, s2) + IGDN] x (stages - 1), ConvTranspose2d(k, s2) to C,
               clamped to [0, 1] (straight-through gradient)
    Each stage halves H and W, rounding up (28 -> 14 -> 7 -> 4), and the transposed
    convolutions' output_padding brings back the exact size. The code is the
    (latent_channels, H', W') feature map; ``latent_dim`` is not supported.
    ``nonlinearity="relu"`` puts ReLUs where GDN/IGDN are (an ablation).
    """
    if nonlinearity not in ("gdn", "relu"):
        raise ConfigError(f"network 'gdn': expected nonlinearity gdn or relu, found {nonlinearity!r}")
    if latent_dim is not None:
        raise ConfigError(f"the gdn network's code is a feature map, found latent_dim={latent_dim}; "
                          "use --net-option latent_channels=N instead")
    for name, v in (("channels", channels), ("latent_channels", latent_channels), ("stages", stages)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"network 'gdn': expected {name} a positive integer, found {v!r}")
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"network 'gdn': expected an odd kernel size, found {kernel!r}; e.g. 5")
    c, h, w = input_shape
    sizes = [(h, w)]
    for _ in range(stages):
        sizes.append((halved(sizes[-1][0]), halved(sizes[-1][1])))
    widths = [c] + [channels] * (stages - 1) + [latent_channels]
    pad = kernel // 2
    enc: list[nn.Module] = []
    for i in range(stages):
        enc.append(nn.Conv2d(widths[i], widths[i + 1], kernel, stride=2, padding=pad))
        if i < stages - 1:
            enc.append(GDN(widths[i + 1]) if nonlinearity == "gdn" else nn.ReLU())
    enc.append(activation(code_activation))
    dec: list[nn.Module] = []
    for i in reversed(range(stages)):
        target = sizes[i]
        dec.append(nn.ConvTranspose2d(widths[i + 1], widths[i], kernel, stride=2, padding=pad,
                                      output_padding=(transpose_padding(target[0]), transpose_padding(target[1]))))
        if i > 0:
            dec.append(GDN(widths[i], inverse=True) if nonlinearity == "gdn" else nn.ReLU())
    dec.append(ClampST())
    return NetPair(nn.Sequential(*enc), nn.Sequential(*dec), (latent_channels,) + sizes[-1])


# -- the factorised density ---------------------------------------------------------------

class FactorizedDensity(nn.Module):
    """One learned univariate density per channel (Balle et al. 2018, appendix 6.1).

    ``logits(v)`` for v of shape (channels, L) is the logit of the cumulative c(v);
    ``likelihood(v)`` = c(v + 1/2) - c(v - 1/2), the probability of the unit interval
    around v (the pmf at integers, the noisy latent's density elsewhere).
    """

    # The parameters are stored divided by PARAM_SCALE, an effective PARAM_SCALE-times larger
    # learning rate under Adam (whose steps do not depend on the gradient's scale): the density
    # must follow the transforms within a few thousand steps on a CPU, not the ~10^6 of the papers.
    PARAM_SCALE = 10.0

    def __init__(self, channels: int, filters=(3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        param_scale = self.PARAM_SCALE
        for k in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[k + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[k + 1], dims[k]), init / param_scale)))
            self.biases.append(nn.Parameter((torch.rand(channels, dims[k + 1], 1) - 0.5) / param_scale))
            if k < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[k + 1], 1)))

    def _params(self, dtype, detach: bool = False):
        """(softplus(H_k), b_k, tanh(a_k) or None) per layer, in ``dtype``."""
        out = []
        for k, (m, b) in enumerate(zip(self.matrices, self.biases)):
            a = self.factors[k] if k < len(self.factors) else None
            if detach:
                m, b, a = m.detach().cpu(), b.detach().cpu(), None if a is None else a.detach().cpu()
            m, b = m.to(dtype) * self.PARAM_SCALE, b.to(dtype) * self.PARAM_SCALE
            a = None if a is None else torch.tanh(a.to(dtype) * self.PARAM_SCALE)
            out.append((F.softplus(m), b, a))
        return out

    def _run(self, v, params):
        h = v.unsqueeze(1)  # (channels, 1, L)
        for m, b, a in params:
            h = torch.matmul(m, h) + b
            if a is not None:
                h = h + a * torch.tanh(h)
        return h.squeeze(1)

    def logits(self, v: torch.Tensor) -> torch.Tensor:
        """(channels, L) -> logit of c(v), (channels, L), in v's dtype."""
        return self._run(v, self._params(v.dtype))

    def likelihood(self, v: torch.Tensor) -> torch.Tensor:
        """c(v + 1/2) - c(v - 1/2), computed on the side of the median where it does not cancel."""
        lower, upper = self.logits(v - 0.5), self.logits(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    @torch.no_grad()
    def pmf_table(self, radius: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """(integers -radius..radius, pmf (channels, 2 radius + 1)), evaluated in float64 on the CPU."""
        ints = torch.arange(-radius, radius + 1, dtype=torch.float64)
        v = ints.expand(self.channels, -1)
        params = self._params(torch.float64, detach=True)
        lower, upper = self._run(v - 0.5, params), self._run(v + 0.5, params)
        sign = -torch.sign(lower + upper)
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return ints.long(), torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))


# -- the kind ------------------------------------------------------------------------------

@register_model("codec")
class LearnedCodec(Autoencoder):
    """Rate + lmbda * 255^2 * distortion, with a quantised latent and a learned factorised
    density (see the module docstring for the formula, units and references)."""

    net_defaults = {"code_activation": "none"}  # a signed latent (the conv net's default is ReLU)
    derived_keys = TABLE_KEYS
    sized = True  # a density per latent element: the built size's grid

    def __init__(self, input_shape, net: str = "gdn", net_options=None, reconstruction: str = "mse",
                 lmbda: float = 0.01,                  # distortion weight: larger = more bytes, more dB
                 straight_through: bool = True,        # decoder sees round(y) (mixed quantisation) or y + u
                 prior: str = "channel",               # one density per latent channel, per element, or context
                 slices: int = 4):                     # prior "context": the channel slices
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
        if reconstruction == "psnr":
            raise ConfigError("the codec weighs a distortion against bits, expected reconstruction l1, mse or bce, "
                              "found psnr (in dB, not a distortion); e.g. --loss mse")
        if not (isinstance(lmbda, (int, float)) and not isinstance(lmbda, bool) and lmbda > 0
                and math.isfinite(lmbda)):
            raise ConfigError(f"expected lmbda (--lambda) > 0, found {lmbda!r}; e.g. --lambda 0.01")
        if straight_through not in (True, False):
            raise ConfigError(f"expected straight_through true or false, found {straight_through!r}")
        if prior not in ("channel", "element", "context"):
            raise ConfigError(f"expected prior channel, element or context, found {prior!r}; "
                              "e.g. --option prior=element")
        if len(self.code_shape) not in (1, 3):
            raise ConfigError(f"the codec needs a vector or (C, H, W) code, the {net} network gives "
                              f"{self.code_shape}; use --net gdn")
        self.lmbda = float(lmbda)
        self.straight_through = bool(straight_through)
        self.prior = prior
        self.latent_channels = int(self.code_shape[0])
        self.positions = math.prod(self.code_shape[1:])
        self.slices = slices
        self.context = None
        coded = self.latent_channels  # the channels the factorised density codes
        if prior == "context":
            if len(self.code_shape) != 3:
                raise ConfigError(f"prior context needs a (C, H, W) code, the {net} network gives {self.code_shape}; "
                                  "use --net gdn")
            if not (isinstance(slices, int) and not isinstance(slices, bool) and slices >= 2
                    and self.latent_channels % slices == 0):
                raise ConfigError(f"expected slices an integer >= 2 dividing the {self.latent_channels} latent "
                                  f"channels, found {slices!r}; e.g. --option slices=4")
            self.context = ChannelContext(self.latent_channels, tuple(self.code_shape[1:]), slices)
            coded = self.context.first
        self.density = FactorizedDensity(coded * (self.positions if prior in ("element", "context") else 1))
        # The range coder's tables, as integers, computed once by finalise() and saved with the
        # weights: compress and decompress read them and never evaluate the float density, so a
        # stream decodes on any machine (another BLAS, thread count, GPU) to the same integers.
        for key in TABLE_KEYS:
            self.register_buffer(key, torch.zeros(0, dtype=torch.int64))

    # -- the coding tables ---------------------------------------------------------------------
    @torch.no_grad()
    def finalise(self) -> None:
        """Compute the integer coding tables from the density (float64 on the CPU), once.

        Per density: the integers lo..hi holding all but TABLE_TAIL of each tail's mass, then
        an escape symbol for the rest; each probability rounded to a positive multiple of
        1 / TABLE_GRID and stored as that multiple (an int64 count)."""
        ints, pmf = self.density.pmf_table(TABLE_RADIUS)  # (2R+1,), (D, 2R+1) float64
        los, sizes, counts = [], [], []
        for row in pmf.numpy():
            left = row.cumsum()
            right = row[::-1].cumsum()
            lo = int((left <= TABLE_TAIL).sum())                    # first index whose left tail exceeds TAIL
            hi = len(row) - 1 - int((right <= TABLE_TAIL).sum())
            if lo > hi:  # a density almost entirely outside the grid: one symbol, the rest escapes
                lo = hi = int(row.argmax())
            probs = row[lo:hi + 1]
            escape = max(1.0 - float(probs.sum()), 2.0 * TABLE_TAIL)
            c = torch.from_numpy((torch.tensor(list(probs) + [escape], dtype=torch.float64) * TABLE_GRID)
                                 .round().clamp_min(1).numpy()).long()
            los.append(int(ints[lo]))
            sizes.append(len(c))
            counts.append(c)
        device = self.density.matrices[0].device
        self.table_lo = torch.tensor(los, dtype=torch.int64, device=device)
        self.table_sizes = torch.tensor(sizes, dtype=torch.int64, device=device)
        self.table_counts = torch.cat(counts).to(device)

    @property
    def finalised(self) -> bool:
        return self.table_sizes.numel() == self.density.channels

    def coding_tables(self) -> list[tuple[int, torch.Tensor]]:
        """Per density: (lo, the int64 counts of lo..hi then the escape symbol), as stored."""
        if not self.finalised:
            raise ConfigError("this codec has no coding tables yet (a run trained before they were stored); "
                              "compress once with `aelab compress --run DIR`, which stores them in the run")
        counts = self.table_counts.cpu().split(self.table_sizes.cpu().tolist())
        return [(int(lo), c) for lo, c in zip(self.table_lo.cpu().tolist(), counts)]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """The tables' buffers take the saved size; a run saved without them loads unfinalised."""
        for key in TABLE_KEYS:
            if prefix + key in state_dict:
                setattr(self, key, torch.zeros_like(state_dict[prefix + key]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for key in TABLE_KEYS:
            if prefix + key in missing_keys:
                missing_keys.remove(prefix + key)

    # -- the contract ------------------------------------------------------------------------
    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """The integers the stream codes: round half to even, clamped to +-LATENT_LIMIT (float dtype)."""
        return torch.round(y).clamp(-LATENT_LIMIT, LATENT_LIMIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The codec's reconstruction: decode(round(encode(x)))."""
        return self.decode(self.quantize(self.encode(x)))

    def options(self) -> dict:
        """The kind's hyper-parameters; ``slices`` only with prior "context" (so the configs, and
        the stream's model ids, of the other priors are what they were before it existed)."""
        options = super().options()
        if self.prior != "context":
            options.pop("slices")
        return options

    def by_density(self, y: torch.Tensor) -> torch.Tensor:
        """(N, C, ...) -> (D, N * P): the values each of the D densities models, P per image
        (prior "channel": D = C, P = positions; "element": D = C * positions, P = 1, in
        C-major order; "context": the element order of slice 0's channels only). The byte
        stream codes the latents in this order."""
        d = self.density.channels
        if self.context is not None:
            y = y[:, :self.context.first]
        return y.reshape(len(y), d, -1).transpose(0, 1).reshape(d, -1)

    def latent_bits(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """-log2 p(y) of each image (N,), with p the density convolved with U(-1/2, 1/2).
        Prior "context": the later slices' Gaussians are predicted from ``context``, the
        decoded latents (default ``y``; in training round(y) while ``y`` carries the noise)."""
        p = self.density.likelihood(self.by_density(y)).clamp_min(LIKELIHOOD_BOUND)  # (D, N * P)
        bits = -torch.log2(p).reshape(self.density.channels, len(y), -1).sum((0, 2))
        if self.context is None:
            return bits
        mu, sigma = self.context(y if context is None else context)
        p = gaussian_likelihood(y[:, self.context.first:], mu, sigma).clamp_min(LIKELIHOOD_BOUND)
        return bits - torch.log2(p).flatten(1).sum(1)

    def adapt_initial_state(self, state: dict) -> dict:
        """Weights of another prior's run start this model (``aelab train --init``): a channel
        prior's densities are copied to every position of an element or context model; the
        densities of slice 0's elements are taken from an element model; a context model's
        predictor starts afresh when the source has none."""
        state = {k: v for k, v in state.items() if k not in TABLE_KEYS}  # derived: finalise() recomputes them
        state.update({k: getattr(self, k) for k in TABLE_KEYS})
        own = self.state_dict()
        for key, value in list(state.items()):
            if self.prior == "channel" or not key.startswith("density.") or key not in own:
                continue  # a channel prior takes only a channel prior's densities
            if value.shape[0] == self.latent_channels:
                value = value.repeat_interleave(self.positions, dim=0)  # a channel prior's densities
            state[key] = value[:own[key].shape[0]]                      # slice 0 is C-major first
        if self.context is not None:
            for key, value in own.items():
                if key.startswith("context.") and key not in state:
                    state[key] = value
        return state

    def loss(self, x_in, x_target):
        y = self.encode(x_in)
        y_hat = self.quantize(y)
        if self.training:
            y_rate = y + (torch.rand_like(y) - 0.5)                   # additive uniform noise
            y_dec = _RoundST.apply(y) if self.straight_through else y_rate
        else:                                                          # what the stream codes
            y_rate = y_dec = y_hat
        rate = self.latent_bits(y_rate, y_dec).mean()                  # bits per image
        x_hat = self.decode(y_dec)
        distortion = reconstruction_loss(x_hat, x_target, self.reconstruction)
        bpp = rate / (self.input_shape[1] * self.input_shape[2])
        return {"rate": rate, "bpp": bpp, "distortion": distortion,
                "loss": bpp + self.lmbda * 255.0 ** 2 * distortion}
