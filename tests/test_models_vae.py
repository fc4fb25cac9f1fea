"""Autoencoder, denoising autoencoder, MLP VAE and conv VAE: checkpoints of
PyTorch's examples VAE, shapes, a training step, fused vs reference parity, the
loss against the examples' formula, the denoising corruption, eval-mode fold,
bad input."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import gan_ext
from gan_ext.models.autoencoder import AEConfig, ConvAutoencoder
from gan_ext.models.vae import ConvVAE, VAE, VAEConfig, VAEOutput, build_vae
from gan_ext.nn import Conv2dNormAct, ConvTranspose2dNormAct

from conftest import requires_fused

# PyTorch examples, vae/main.py: fc1 = Linear(784, 400), fc21/fc22 = Linear(400, 20),
# fc3 = Linear(20, 400), fc4 = Linear(400, 784).
EXAMPLES_VAE_STATE = [
    ("fc1.weight", (400, 784)), ("fc1.bias", (400,)),
    ("fc21.weight", (20, 400)), ("fc21.bias", (20,)),
    ("fc22.weight", (20, 400)), ("fc22.bias", (20,)),
    ("fc3.weight", (400, 20)), ("fc3.bias", (400,)),
    ("fc4.weight", (784, 400)), ("fc4.bias", (784,)),
]

MODELS = ["ae", "dae", "mlp_vae", "conv_vae"]


def make_model(name: str):
    if name == "ae":
        return ConvAutoencoder(AEConfig())
    if name == "dae":
        return ConvAutoencoder(AEConfig(denoising=True))
    if name == "mlp_vae":
        return VAE()
    if name == "conv_vae":
        return ConvVAE(VAEConfig(kind="conv", base_channels=8))
    if name == "conv_vae32":
        return ConvVAE(VAEConfig(kind="conv", in_channels=3, image_size=32, base_channels=8))
    raise AssertionError(name)


def images(model, batch: int) -> torch.Tensor:
    shape = (1, 28, 28) if isinstance(model, ConvAutoencoder) else model.config.image_shape
    return torch.rand(batch, *shape)


def total_loss(losses):
    return losses[0] if isinstance(losses, tuple) else losses


# ------------------------------------------------------- examples checkpoints
def test_vae_state_dict_matches_pytorch_examples():
    sd = VAE().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == EXAMPLES_VAE_STATE


def test_vae_loads_examples_checkpoint_strictly(tmp_path):
    ckpt = {k: torch.randn(shape) for k, shape in EXAMPLES_VAE_STATE}
    path = tmp_path / "vae.pth"
    torch.save(ckpt, path)
    model = VAE()
    result = model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt[k])
    # and the model's own checkpoint goes back into a fresh examples-shaped VAE
    torch.save(model.state_dict(), path)
    VAE().load_state_dict(torch.load(path, weights_only=True), strict=True)


# ------------------------------------------------------------------- shapes
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", MODELS + ["conv_vae32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_shapes(name, batch, training):
    model = make_model(name).train(training)
    x = images(model, batch)
    with torch.no_grad():
        out = model(x)
    if isinstance(model, ConvAutoencoder):
        assert out.shape == (batch, 1, 28, 28)
        assert 0 <= out.min() and out.max() <= 1
        assert model.encode(x).shape == (batch, 4)
        assert model.decode(torch.randn(batch, 4)).shape == (batch, 1, 28, 28)
        return
    D = model.config.latent_dim
    assert isinstance(out, VAEOutput)
    logits_shape = (batch, 784) if isinstance(model, VAE) else (batch, *model.config.image_shape)
    assert out.logits.shape == logits_shape
    assert out.mu.shape == out.logvar.shape == out.z.shape == (batch, D)
    assert out.kl.shape == (batch,) and (out.kl >= 0).all()
    with torch.no_grad():
        assert model.reconstruct(x).shape == x.shape
        assert model.negative_elbo(x).shape == ()
    samples = model.sample(batch)
    assert samples.shape == (batch, *model.config.image_shape)
    assert 0 <= samples.min() and samples.max() <= 1


def test_mlp_vae_accepts_flat_input():
    model = VAE().eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x.view(2, 784)).logits, model(x).logits)


def test_build_vae_picks_the_class():
    assert type(build_vae(VAEConfig())) is VAE
    assert type(build_vae(VAEConfig(kind="conv"))) is ConvVAE


# -------------------------------------------------------------- one step
@pytest.mark.parametrize("name", MODELS)
def test_one_optimizer_step(name):
    model = make_model(name).train()
    x = images(model, 4)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = model.configure_optimizer()
    stats = model.train_step(x, opt)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
               for v in stats.values())
    assert all(torch.isfinite(v) for v in stats.values()), stats
    if isinstance(model, ConvAutoencoder):
        assert set(stats) == {"loss"}
    else:
        assert set(stats) == {"loss", "recon", "kl", "loss_per_image", "recon_per_image",
                              "kl_per_image"}
        torch.testing.assert_close(stats["loss"], stats["recon"] + stats["kl"])
        torch.testing.assert_close(stats["kl_per_image"] * 4, stats["kl"])
    changed = [k for k, p in model.named_parameters() if not torch.equal(p, before[k])]
    assert len(changed) == len(before), set(before) - set(changed)


# ------------------------------------------------------ fused vs reference
def _run(model, x, backend):
    with gan_ext.use_backend(backend):
        torch.manual_seed(123)
        out = model(x)
        torch.manual_seed(123)
        losses = model.loss(x)
        total_loss(losses).backward()
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    losses = losses if isinstance(losses, tuple) else (losses,)
    grads = {k: p.grad for k, p in model.named_parameters()}
    return outs, losses, grads, {k: b.clone() for k, b in model.named_buffers()}


@requires_fused
@pytest.mark.parametrize("name", MODELS)
def test_fused_matches_reference(name):
    model = make_model(name).train()
    twin = copy.deepcopy(model)
    x = images(model, 3)
    outs_f, losses_f, grads_f, bufs_f = _run(model, x, "fused")
    outs_r, losses_r, grads_r, bufs_r = _run(twin, x, "reference")
    for a, b in zip(outs_f, outs_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(losses_f, losses_r):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for k in grads_r:
        scale = grads_r[k].abs().max().item()
        torch.testing.assert_close(grads_f[k], grads_r[k], rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                   msg=lambda m: f"{k}: {m}")
    for k in bufs_r:
        torch.testing.assert_close(bufs_f[k], bufs_r[k], rtol=1e-5, atol=1e-6)


# --------------------------------------------------- loss = examples' formula
def _examples_loss(out: VAEOutput, x: torch.Tensor, beta: float):
    """vae/main.py: BCE(recon_x, x.view(-1, 784), sum) + KLD, with KLD written out."""
    target = x.reshape(out.logits.shape)
    bce = F.binary_cross_entropy(torch.sigmoid(out.logits), target, reduction="sum")
    kld = -0.5 * torch.sum(1 + out.logvar - out.mu.pow(2) - out.logvar.exp())
    return bce + beta * kld, bce, kld


@pytest.mark.parametrize("name", ["mlp_vae", "conv_vae"])
@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_vae_loss_equals_examples_formula(name, beta):
    model = make_model(name).train()
    model.config.beta = beta
    x = images(model, 3)
    torch.manual_seed(7)
    total, recon, kl = model.loss(x)
    torch.manual_seed(7)
    out = model(x)
    assert out.logits.abs().max() < 15  # moderate logits: sigmoid + BCE is still accurate
    e_total, e_bce, e_kld = _examples_loss(out, x, beta)
    torch.testing.assert_close(recon, e_bce, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(kl, e_kld, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(total, e_total, rtol=1e-5, atol=1e-3)


def test_vae_loss_is_finite_on_saturated_logits():
    """Where sigmoid rounds to 0 or 1 the examples' BCE clamps log at -100; the
    logits form stays exact."""
    model = VAE()
    with torch.no_grad():
        model.fc4.bias.fill_(-200.0)
    x = torch.rand(2, 1, 28, 28)
    total, recon, _ = model.loss(x)
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_negative_elbo_matches_formula():
    model = VAE().eval()
    x = images(model, 4)
    with torch.no_grad():
        out = model(x, sample=False)
        expected = _examples_loss(out, x, 1.0)[0] / 4
    model.config.beta = 3.0  # the ELBO ignores beta
    torch.testing.assert_close(model.negative_elbo(x), expected, rtol=1e-5, atol=1e-3)
    torch.manual_seed(3)
    one = model.negative_elbo(x, sample=True)
    torch.manual_seed(3)
    assert torch.equal(model.negative_elbo(x, sample=True), one)
    assert not torch.equal(one, model.negative_elbo(x))


# ------------------------------------------------------------- sampling z
def test_vae_eval_encode_returns_mu_unless_asked():
    model = VAE()
    x = images(model, 3)
    model.eval()
    z, mu, logvar, kl = model.encode(x)
    assert torch.equal(z, mu)
    torch.testing.assert_close(kl, -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1))
    z_s, mu_s, _, _ = model.encode(x, sample=True)
    assert torch.equal(mu_s, mu) and not torch.equal(z_s, mu)
    model.train()
    torch.manual_seed(1)
    z1 = model.encode(x)[0]
    torch.manual_seed(1)
    z2 = model.encode(x)[0]
    assert torch.equal(z1, z2) and not torch.equal(z1, mu)
    assert torch.equal(model.encode(x, sample=False)[0], mu)


def test_sample_restores_mode_and_leaves_running_stats():
    model = make_model("conv_vae").train()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    torch.manual_seed(0)
    a = model.sample(3)
    assert model.training
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    torch.manual_seed(0)
    assert torch.equal(model.sample(3), a)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.sample(3, generator=g), a)


# ---------------------------------------------------------------- denoising
def test_add_noise_is_clipped_and_scaled():
    model = ConvAutoencoder(AEConfig(denoising=True))
    assert model.config.noise_factor == 0.3
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(5)
    noisy = model.add_noise(x)
    torch.manual_seed(5)
    expected = torch.clamp(x + 0.3 * torch.randn_like(x), 0.0, 1.0)
    torch.testing.assert_close(noisy, expected, rtol=0, atol=1e-7)
    assert noisy.min() == 0 and noisy.max() == 1  # clipping happened on both sides
    inside = (noisy > 0) & (noisy < 1)
    std = (noisy - x)[inside].std().item()
    assert 0.2 < std < 0.32  # a factor of 0.3, a little less where clipping trims the tails
    assert torch.equal(x, x.clone())  # input untouched
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(model.add_noise(x, generator=g), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("denoising,training,corrupted", [
    (True, True, True), (True, False, False), (False, True, False), (False, False, False)])
def test_noise_only_in_training_with_denoising(denoising, training, corrupted):
    model = ConvAutoencoder(AEConfig(denoising=denoising)).train(training)
    seen = []
    model.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        model(x)
    assert torch.equal(seen[0], x) != corrupted
    assert 0 <= seen[0].min() and seen[0].max() <= 1


def test_denoising_loss_targets_clean_image():
    model = ConvAutoencoder(AEConfig(denoising=True)).train()
    x = torch.rand(2, 1, 28, 28)
    torch.manual_seed(9)
    loss = model.loss(x)
    torch.manual_seed(9)
    recon = model(x)
    torch.testing.assert_close(loss, F.mse_loss(recon, x))


# ------------------------------------------------------ eval-mode fold
def _plain_block(block, x):
    """conv -> F.batch_norm(running stats) -> relu in plain torch: an oracle
    independent of the fused op and the fold."""
    y = block.conv(x)
    n = block.norm
    return F.relu(F.batch_norm(y, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0,
                               n.eps))


def _plain_forward(seq, x):
    for m in seq:
        x = _plain_block(m, x) if isinstance(m, (Conv2dNormAct, ConvTranspose2dNormAct)) else m(x)
    return x


@pytest.mark.parametrize("name", ["ae", "conv_vae"])
def test_eval_fold_matches_unfolded(name):
    model = make_model(name)
    blocks = [m for m in model.modules() if isinstance(m, (Conv2dNormAct, ConvTranspose2dNormAct))]
    with torch.no_grad():  # nontrivial affine parameters and running statistics
        for b in blocks:
            b.norm.weight.uniform_(0.5, 1.5)
            b.norm.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(images(model, 8) * 2 - 0.5)
    model.eval()
    x = images(model, 3)
    with torch.no_grad():
        folded = model(x)
        assert all(b._fold_cache is not None for b in blocks)  # the fold did run
    for b in blocks:
        b.invalidate_fold()
    with torch.enable_grad():  # parameters require grad: the norms run unfolded
        unfolded = model(x)
        assert all(b._fold_cache is None for b in blocks)
    with torch.no_grad():
        if isinstance(model, ConvAutoencoder):
            plain = torch.sigmoid(_plain_forward(model.decoder, _plain_forward(model.encoder, x)))
            torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-5)
        else:
            mu = model.fc_mu(_plain_forward(model.encoder, x))
            plain = _plain_forward(model.decoder, F.relu(model.fc_z(mu)))
            for a, b in zip(folded, unfolded):
                torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(folded.logits, plain, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(latent_dim=0), ValueError, "latent_dim"),
    (dict(latent_dim=2.5), TypeError, "latent_dim"),
    (dict(noise_factor=-0.1), ValueError, "noise_factor"),
    (dict(noise_factor=1.5), ValueError, "noise_factor"),
    (dict(noise_factor="0.3"), TypeError, "noise_factor"),
    (dict(denoising="yes"), TypeError, "denoising"),
    (dict(lr=0.0), ValueError, "lr"),
])
def test_ae_config_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        AEConfig(**kwargs)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(latent_dim=0), ValueError, "latent_dim"),
    (dict(latent_dim=True), TypeError, "latent_dim"),
    (dict(hidden=0), ValueError, "hidden"),
    (dict(beta=-1.0), ValueError, "beta"),
    (dict(beta=float("nan")), ValueError, "beta"),
    (dict(lr=-1e-3), ValueError, "lr"),
    (dict(kind="gan"), ValueError, "kind"),
    (dict(kind="conv", image_size=48), ValueError, "image_size"),
    (dict(in_channels=0), ValueError, "in_channels"),
])
def test_vae_config_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        VAEConfig(**kwargs)


def test_config_edited_after_construction_is_checked():
    cfg = VAEConfig()
    cfg.latent_dim = -3
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(cfg)
    cfg = AEConfig()
    cfg.noise_factor = 2.0
    with pytest.raises(ValueError, match="noise_factor"):
        ConvAutoencoder(cfg)


def test_model_config_errors():
    with pytest.raises(ValueError, match="kind"):
        VAE(VAEConfig(kind="conv"))
    with pytest.raises(ValueError, match="kind"):
        ConvVAE(VAEConfig(kind="mlp"))
    with pytest.raises(TypeError, match="config"):
        VAE({"latent_dim": 20})
    with pytest.raises(TypeError, match="config"):
        ConvAutoencoder(VAEConfig())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bad,exc", [
    (lambda: torch.rand(2, 3, 28, 28), ValueError),      # channels
    (lambda: torch.rand(2, 1, 32, 32), ValueError),      # size
    (lambda: torch.rand(1, 28, 28), ValueError),         # no batch dim
    (lambda: torch.randint(0, 2, (2, 1, 28, 28)), TypeError),  # integer images
    (lambda: [[0.0] * 784], TypeError),                   # not a tensor
])
def test_bad_images(name, bad, exc):
    model = make_model(name)
    match = (r"x must have shape \(B, " if exc is ValueError
             else r"x must be a (torch\.Tensor|floating point tensor)")
    with pytest.raises(exc, match=match):
        model(bad())
    with pytest.raises(exc, match=match):
        model.loss(bad())


@pytest.mark.parametrize("name", MODELS)
def test_bad_latent(name):
    model = make_model(name)
    with pytest.raises(ValueError, match=r"expected z of shape"):
        model.decode(torch.randn(2, 7))
    with pytest.raises(TypeError, match="z must be"):
        model.decode([0.0] * 4)


def test_bad_sample_count():
    with pytest.raises(ValueError, match="n must be >= 1"):
        VAE().sample(0)
    with pytest.raises(TypeError, match="n must be an int"):
        VAE().sample(2.0)


def test_mlp_vae_rejects_wrong_flat_size():
    with pytest.raises(ValueError, match="784"):
        VAE()(torch.rand(2, 780))


@pytest.mark.parametrize("name", MODELS)
def test_float64_step(name):
    """The fused ops take float64 too (what gradcheck-style debugging uses)."""
    model = make_model(name).double().train()
    x = images(model, 2).double()
    stats = model.train_step(x, torch.optim.SGD(model.parameters(), lr=1e-3))
    assert all(v.dtype == torch.float64 and torch.isfinite(v) for v in stats.values())


def test_plain_vae_build_matches_fused_in_eval():
    """VAE(fused=False) is the plain-PyTorch baseline of the benchmarks: the
    same state_dict and, without sampling, the same loss as the fused VAE."""
    from gan_ext.models import VAE, VAEConfig

    torch.manual_seed(0)
    fused = VAE(VAEConfig())
    plain = VAE(VAEConfig(), fused=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(4, 1, 28, 28)
    for a, b in zip(fused.loss(x, sample=False), plain.loss(x, sample=False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    plain.train()
    total, recon, kl = plain.loss(x)
    assert torch.isfinite(total) and kl.item() >= 0
