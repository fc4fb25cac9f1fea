"""The mode-collapse benchmarks' metrics (gan_ext.metrics.modes) and the
cures' building blocks (gan_ext.models.cures, gan_ext.nn.minibatch_stddev)."""
import math

import pytest
import torch

from gan_ext import metrics
from gan_ext.metrics.modes import GRID, RING, kl_to_uniform, ring_centres
from gan_ext.models import cures
from gan_ext.models.modes import MixtureGAN, MixtureGANConfig, StackedMNISTConfig, StackedMNISTGAN
from gan_ext.nn import MinibatchStdDev, minibatch_stddev

# ------------------------------------------------------------------ metrics


def test_ring_centres_are_distinct_and_on_the_circle():
    c = ring_centres()
    assert c.shape == (8, 2)
    assert torch.allclose(c.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    d = torch.cdist(c, c) + torch.eye(8, dtype=torch.float64) * 10
    assert d.min() > 1.5      # 2 * 2 * sin(pi / 8) = 1.53; linspace(0, 2 pi, 8) would give 0
    assert RING.sigma == 0.02 and GRID.sigma == 0.05 and GRID.modes == 25


@pytest.mark.parametrize("mixture", [RING, GRID], ids=["ring", "grid"])
def test_a_perfect_sampler_covers_every_mode(mixture):
    x = mixture.sample(2500, torch.Generator().manual_seed(0))
    r = metrics.mixture_modes(x, mixture)
    assert r["modes"] == mixture.modes
    # 1 - exp(-9/2) = 0.9889 of a 2-D Gaussian lies within 3 sigma
    assert abs(r["high_quality"] - (1 - math.exp(-4.5))) < 0.01
    assert r["reverse_kl"] < 0.02
    assert sum(r["counts"]) == round(r["high_quality"] * 2500)


@pytest.mark.parametrize("mixture", [RING, GRID], ids=["ring", "grid"])
def test_a_single_point_covers_one_mode(mixture):
    x = mixture.centres[3:4].float().repeat(2500, 1)
    r = metrics.mixture_modes(x, mixture)
    assert r["modes"] == 1 and r["high_quality"] == 1.0
    assert r["reverse_kl"] == pytest.approx(math.log(mixture.modes))


def test_points_between_modes_are_low_quality():
    x = torch.zeros(100, 2) + torch.tensor([1.0, 1.0])          # between grid centres
    r = metrics.mixture_modes(x, GRID)
    assert r["modes"] == 0 and r["high_quality"] == 0.0 and math.isnan(r["reverse_kl"])


def test_kl_to_uniform():
    assert kl_to_uniform(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0)
    assert kl_to_uniform(torch.tensor([0, 8, 0, 0])) == pytest.approx(math.log(4))
    assert kl_to_uniform(torch.tensor([1, 3])) == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5))


@pytest.mark.parametrize("bad, err, match", [
    (torch.zeros(10, 3), ValueError, r"shape \(N, 2\)"),
    (torch.zeros(0, 2), ValueError, "empty"),
    (torch.tensor([[0.0, float("nan")]]), ValueError, "NaN"),
    (torch.zeros(4, 2, dtype=torch.int64), TypeError, "floating point"),
])
def test_mixture_modes_refuses_bad_samples(bad, err, match):
    with pytest.raises(err, match=match):
        metrics.mixture_modes(bad, RING)


def test_stacked_mnist_real_images_cover_the_modes():
    from gan_ext.train.modes import real_stacked
    x, modes = real_stacked(3000, seed=0)
    assert x.shape == (3000, 3, 28, 28)
    r = metrics.stacked_mnist_modes(x)
    true = torch.bincount(modes, minlength=1000)
    # the classifier reads ~99% of the digits right: what it counts is the truth's coverage
    assert abs(r["modes"] - int((true > 0).sum())) <= 15
    assert r["modes"] > 900 and r["kl"] < 0.3
    one = metrics.stacked_mnist_modes(x[:1].repeat(500, 1, 1, 1))
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(1000))


def test_stacked_mnist_draws_independent_channels():
    imgs = torch.arange(10, dtype=torch.uint8)[:, None, None].expand(10, 28, 28)
    labels = torch.arange(10)
    x, m = metrics.stacked_mnist(2000, imgs, labels, torch.Generator().manual_seed(1))
    assert x.shape == (2000, 3, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(m, x[:, 0, 0, 0].long() * 100 + x[:, 1, 0, 0].long() * 10
                       + x[:, 2, 0, 0].long())
    assert len(torch.unique(m)) > 800   # 1000 modes, 2000 draws


def test_stacked_mnist_modes_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3, 28, 28\)"):
        metrics.stacked_mnist_modes(torch.zeros(4, 1, 28, 28))


# ------------------------------------------------------- minibatch stddev
def test_minibatch_stddev_matches_its_definition():
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 4, 4, 4) and torch.equal(y[:, :3], x)
    # strided groups: samples n and n + 2 share a group (8 / 4 = 2 groups)
    for g in range(2):
        members = x[g::2]                                            # (4, 3, 4, 4)
        std = (members.var(0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[g::2, 3], std.float().double().expand(4, 4, 4), atol=1e-6)
    v = minibatch_stddev(torch.randn(6, 5), 3)
    assert v.shape == (6, 6)
    assert minibatch_stddev(torch.randn(2, 5), 4).shape == (2, 6)   # group = the whole batch


def test_minibatch_stddev_refuses_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="not a multiple of the group size 4"):
        MinibatchStdDev(4)(torch.randn(6, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, F\)"):
        minibatch_stddev(torch.randn(4, 2, 3), 4)


def test_a_collapsed_batch_has_zero_stddev_feature():
    x = torch.randn(1, 3, 4, 4).repeat(8, 1, 1, 1)
    assert minibatch_stddev(x)[:, 3].max() < 1e-3


# -------------------------------------------------------------------- pack
def test_pack_puts_consecutive_samples_side_by_side():
    x = torch.arange(6 * 2 * 3 * 3, dtype=torch.float32).view(6, 2, 3, 3)
    p = cures.pack(x, 3)
    assert p.shape == (2, 6, 3, 3)
    assert torch.equal(p[1, 2:4], x[4]) and torch.equal(p[0, :2], x[0])
    assert torch.equal(cures.pack(torch.arange(8.0).view(4, 2), 2),
                       torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]))
    with pytest.raises(ValueError, match="multiple of --pack 4"):
        cures.pack(torch.zeros(6, 2), 4)


@pytest.mark.parametrize("kw, err, match", [
    (dict(pack=0), ValueError, "pack"),
    (dict(minibatch_stddev=-1), ValueError, "minibatch_stddev"),
    (dict(minibatch_discrimination=(100,)), ValueError, "num_kernels"),
    (dict(minibatch_discrimination=(100, 5, "max")), ValueError, "(B, C, 'mean')"),
    (dict(unrolled_first_order=True), ValueError, "unrolled K"),
    (dict(ema=1.0), ValueError, "ema"),
    (dict(feature_matching=1), TypeError, "feature_matching"),
    (dict(joint_batch=1), TypeError, "joint_batch"),
    (dict(joint_batch=True, minibatch_stddev=4), ValueError, "joint_batch cannot be combined "
                                                             "with minibatch_stddev"),
    (dict(joint_batch=True, unrolled=2, feature_matching=True), ValueError,
     "with feature_matching, unrolled"),
    (dict(joint_batch=True, minibatch_discrimination=(8, 3)), ValueError,
     "minibatch_discrimination"),
])
def test_cure_options_are_checked(kw, err, match):
    with pytest.raises(err, match=match):
        MixtureGANConfig(**kw)


@pytest.mark.parametrize("value, spec", [
    ("100,5", (100, 5)), (" 20, 5 , mean", (20, 5, "mean")), ("20,5,sum", (20, 5)),
    ((8, 3), (8, 3)), ((8, 3, "sum"), (8, 3)), ([8, 3, "mean"], (8, 3, "mean")),
])
def test_mbd_spec_has_one_spelling_per_setting(value, spec):
    # The option's text and the config's tuple normalise alike: the paper's
    # sum is the 2-tuple, so a config.json never holds two forms of one run.
    assert cures.mbd_spec(value) == spec
    assert MixtureGANConfig(minibatch_discrimination=value
                            if not isinstance(value, str) else spec).minibatch_discrimination == spec


@pytest.mark.parametrize("value, err", [
    ("5,3,max", ValueError), ("0,5", ValueError), ("a,b", ValueError), ("5", ValueError),
    ("5,-3", ValueError), ("5,\u00b2", ValueError), ("5,3,mean,x", ValueError), (None, ValueError), (5, ValueError),
    ((100, 5, "max"), ValueError), ((0, 5), ValueError), ((True, 3), TypeError),
    (("8", "3"), TypeError),
])
def test_mbd_spec_refuses_bad_sizes(value, err):
    with pytest.raises(err, match="minibatch_discrimination"):
        cures.mbd_spec(value)


def test_cured_discriminator_shapes():
    for cfg, batch in ((MixtureGANConfig(pack=4, minibatch_stddev=4), (16, 2)),
                       (StackedMNISTConfig(pack=2, minibatch_stddev=4), (16, 3, 28, 28)),
                       (StackedMNISTConfig(arch="veegan", nz=100), (4, 3, 28, 28))):
        cls = MixtureGAN if isinstance(cfg, MixtureGANConfig) else StackedMNISTGAN
        gan = cls(cfg)
        out = gan.D(torch.randn(*batch))
        assert out.shape == (batch[0] // cfg.pack,)
        assert gan.G(torch.randn(5, cfg.nz)).shape == (5, *batch[1:])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        MixtureGAN(MixtureGANConfig()).D(torch.randn(4, 3))
    with pytest.raises(ValueError, match="does not split into groups of 4"):
        MixtureGAN(MixtureGANConfig(minibatch_stddev=4)).D(torch.randn(6, 2))


def test_a_mixture_arch_is_its_networks():
    v = MixtureGANConfig.for_arch("veegan")
    assert (v.nz, v.g_hidden, v.d_hidden, v.maxout, v.lr) == (256, (128, 128), (128,), 0, 1e-3)
    assert MixtureGANConfig().arch == "pacgan" and MixtureGANConfig().g_hidden == (400,) * 4
    with pytest.raises(ValueError, match="arch='custom'"):
        MixtureGANConfig(arch="veegan")            # the label without VEEGAN's networks
    assert MixtureGANConfig(arch="custom", g_hidden=(8,)).g_hidden == (8,)


# ---------------------------------------------------------------- unrolled
def _tiny(**kw):
    torch.manual_seed(0)
    gan = MixtureGAN(MixtureGANConfig(arch="custom", nz=2, g_hidden=(6,), d_hidden=(5,),
                                      maxout=2, lr=0.05, **kw)).double()
    opt_g, opt_d = gan.make_optimizers()
    real = torch.randn(8, 2, dtype=torch.float64)
    gan.train_step(real, opt_g, opt_d)          # Adam state exists: the look-ahead carries it
    return gan, opt_g, opt_d, real


def _unrolled_g_loss(gan, opt_d, real, z, exact):
    fake = gan.G(z)
    params = cures.lookahead(gan.D, opt_d, gan.loss.d_loss, real, fake, 3, exact,
                             lambda p, x: torch.func.functional_call(gan.D, p, (x,)))
    return gan.loss.g_loss(torch.func.functional_call(gan.D, params, (fake,)))


def test_exact_unrolled_gradient_matches_finite_differences():
    gan, _, opt_d, real = _tiny(unrolled=3)
    z = torch.randn(8, 2, dtype=torch.float64)
    w = gan.G.main[-1].weight                                      # (2, 6)
    loss = _unrolled_g_loss(gan, opt_d, real, z, exact=True)
    (g_exact,) = torch.autograd.grad(loss, w)
    loss = _unrolled_g_loss(gan, opt_d, real, z, exact=False)
    (g_first,) = torch.autograd.grad(loss, w)
    eps, fd = 1e-6, torch.zeros_like(w)
    for idx in [(0, 0), (1, 3), (0, 5)]:
        with torch.no_grad():
            w[idx] += eps
        up = _unrolled_g_loss(gan, opt_d, real, z, True).item()
        with torch.no_grad():
            w[idx] -= 2 * eps
        down = _unrolled_g_loss(gan, opt_d, real, z, True).item()
        with torch.no_grad():
            w[idx] += eps
        fd[idx] = (up - down) / (2 * eps)
        assert g_exact[idx].item() == pytest.approx(fd[idx].item(), rel=1e-4, abs=1e-8)
    # the first-order form drops the look-ahead's dependence on G: a different gradient
    assert not torch.allclose(g_exact, g_first, rtol=1e-3)


@pytest.mark.parametrize("first_order", [False, True])
def test_the_look_ahead_leaves_d_and_its_optimizer_alone(first_order):
    gan, opt_g, opt_d, real = _tiny(unrolled=2, unrolled_first_order=first_order)
    d_before = {k: v.clone() for k, v in gan.D.state_dict().items()}
    st_before = {k: v.clone() for k, v in opt_d.state_dict()["state"][0].items()}
    z = torch.randn(8, 2, dtype=torch.float64)
    fake = gan.G(z)
    cures.lookahead(gan.D, opt_d, gan.loss.d_loss, real, fake, 2, not first_order,
                    lambda p, x: torch.func.functional_call(gan.D, p, (x,)))
    for k, v in gan.D.state_dict().items():
        assert torch.equal(v, d_before[k]), k
    for k, v in opt_d.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(st_before[k])), k


def test_the_look_ahead_is_adams_update():
    gan, _, opt_d, real = _tiny()
    fake = gan.G(torch.randn(8, 2, dtype=torch.float64)).detach()
    params = cures.lookahead(gan.D, opt_d, gan.loss.d_loss, real, fake, 2, False,
                             lambda p, x: torch.func.functional_call(gan.D, p, (x,)))
    for _ in range(2):                                             # the real thing, twice
        loss = gan.loss.d_loss(gan.D(real), gan.D(fake))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    for n, p in gan.D.named_parameters():
        assert torch.allclose(params[n], p, rtol=1e-9, atol=1e-12), n


# --------------------------------------------------------------------- EMA
def test_ema_is_the_ramped_moving_average_and_samples():
    """ema <- b_t ema + (1 - b_t) G after each G step, b_t = ema_decay(d, t)."""
    torch.manual_seed(0)
    gan = MixtureGAN(MixtureGANConfig(arch="custom", nz=2, g_hidden=(6,), d_hidden=(5,),
                                      maxout=2, lr=0.05, ema=0.9)).double()
    opt_g, opt_d = gan.make_optimizers()
    real = torch.randn(8, 2, dtype=torch.float64)
    want = {k: v.clone() for k, v in [*gan.G_ema.named_parameters(), *gan.G_ema.named_buffers()]}
    assert "main.1.running_mean" in want           # batch norm statistics: averaged too
    for t in range(1, 4):
        gan.train_step(real, opt_g, opt_d)
        b = cures.ema_decay(0.9, t)
        now = dict([*gan.G.named_parameters(), *gan.G.named_buffers()])
        for k, v in [*gan.G_ema.named_parameters(), *gan.G_ema.named_buffers()]:
            g = now[k].detach()
            # integer buffers (num_batches_tracked): copied
            want[k] = b * want[k] + (1 - b) * g if v.is_floating_point() else g.clone()
            assert torch.allclose(v, want[k], rtol=1e-12, atol=1e-14), (t, k)
            assert not v.requires_grad
    assert gan.ema_updates == 3
    assert gan.sampler is gan.G_ema and "G_ema.main.0.weight" in gan.state_dict()
    assert MixtureGAN(MixtureGANConfig()).sampler is not None


def test_ema_decay_ramps_up_to_the_decay():
    assert cures.ema_decay(0.999, 1) == 0.5 ** 20          # the first update: ~G itself
    half_life = math.log(0.5) / math.log(0.999)            # 692.8 updates
    for t in (10, 1000, 13856):                             # half-life 5% of the steps so far
        assert 0.5 ** (1 / (0.05 * t)) == cures.ema_decay(0.999, t) < 0.999
    assert cures.ema_decay(0.999, 13857) == 0.999 and 0.05 * 13857 > half_life
    assert cures.ema_decay(0.999, cures.EMA_SETTLED) == 0.999   # an old checkpoint's resume
    with pytest.raises(ValueError, match="updates must be >= 1"):
        cures.ema_decay(0.999, 0)


def test_the_look_ahead_refuses_an_optimizer_it_does_not_reproduce():
    gan, _, _, real = _tiny()
    fake = gan.G(torch.randn(8, 2, dtype=torch.float64))
    run = lambda p, x: torch.func.functional_call(gan.D, p, (x,))  # noqa: E731
    for opt in (torch.optim.SGD(gan.D.parameters(), lr=0.1),
                torch.optim.Adam(gan.D.parameters(), weight_decay=0.1)):
        with pytest.raises(ValueError, match="reproduces plain Adam"):
            cures.lookahead(gan.D, opt, gan.loss.d_loss, real, fake, 1, True, run)


# ---------------------------------------------------------- joint batches
class _Spy(torch.nn.Module):
    """A D with batch norm that records the batch size of every call."""

    def __init__(self, per_output: int = 1) -> None:
        super().__init__()
        self.per_output, self.sizes = per_output, []
        self.norm = torch.nn.BatchNorm1d(2)
        self.head = torch.nn.Linear(2 * per_output, 1)

    def forward(self, x):
        self.sizes.append(x.size(0))
        return self.head(self.norm(x).reshape(-1, 2 * self.per_output))


@pytest.mark.parametrize("joint", [False, True])
def test_joint_batch_scores_real_and_fake_in_one_call(joint):
    from gan_ext.models.gan import train_step
    from gan_ext.nn import GANLoss
    torch.manual_seed(0)
    G, D = torch.nn.Linear(3, 2), _Spy()
    G.nz = 3
    opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (G, D))
    real = torch.randn(8, 2)
    torch.manual_seed(1)
    stats = train_step(G, D, opt_g, opt_d, real, GANLoss(), joint_batch=joint)
    # D step and G step: one call on 16 samples each, or two on 8 each.
    assert D.sizes == ([16, 16] if joint else [8, 8, 8])
    # The D step's scores are those of one call on the concatenated batch
    # (batch statistics of both), which differ from separate calls.
    torch.manual_seed(0)
    G2, D2 = torch.nn.Linear(3, 2), _Spy()
    torch.manual_seed(1)
    fake = G2(torch.randn(8, 3)).detach()
    both = torch.sigmoid(D2(torch.cat([real, fake]))).view(-1)
    apart = torch.sigmoid(torch.cat([D2(real), D2(fake)])).view(-1)
    want = both if joint else apart
    assert torch.allclose(stats["d_real"], want[:8].mean(), atol=1e-6)
    assert torch.allclose(stats["d_fake"], want[8:].mean(), atol=1e-6)
    assert not torch.allclose(both, apart, atol=1e-3)


def test_joint_batch_splits_a_packing_ds_outputs():
    from gan_ext.models.gan_step import _Players
    D = _Spy(per_output=4)          # one output per pack of 4 samples
    players = _Players(None, D, None, None)
    d_real, d_fake = players.score_both(torch.randn(8, 2), None, torch.randn(4, 2), None)
    assert d_real.shape == (2, 1) and d_fake.shape == (1, 1)
    with pytest.raises(ValueError, match="a pack would hold both"):
        players.score_both(torch.randn(2, 2), None, torch.randn(6, 2), None)


def test_joint_batch_refuses_a_generator_objective():
    from gan_ext.models.gan import train_step
    from gan_ext.nn import GANLoss
    G, D = torch.nn.Linear(3, 2), _Spy()
    G.nz = 3
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="joint_batch takes the plain generator loss"):
        train_step(G, D, opt, opt, torch.randn(4, 2), GANLoss(), joint_batch=True,
                   g_objective=lambda *a: None)
