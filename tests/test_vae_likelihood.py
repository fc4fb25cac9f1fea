"""The VAE's importance-weighted NLL (gan_ext.metrics.likelihood) against the
exact log-likelihood of tiny models integrated on a grid in float64, its
bounds, its determinism, and its place in `gan-ext train/eval vae`."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from gan_ext import cli
from gan_ext.metrics import vae_importance_nll
from gan_ext.models import VAE, ConvVAE, VAEConfig

TINY = ["--batch-size", "4", "--limit", "16", "--no-progress", "--threads", "1"]


def _tiny(latent_dim: int, seed: int = 0) -> VAE:
    """A 2x2-pixel MLP VAE in float64 whose q(z|x) is off the posterior (a
    shifted mean, a too wide variance) and whose decoder depends strongly on z,
    so the ELBO is clearly below log p(x)."""
    torch.manual_seed(seed)
    m = VAE(VAEConfig(latent_dim=latent_dim, hidden=8, image_size=2)).double().eval()
    with torch.no_grad():
        m.fc3.weight.mul_(4.0)
        m.fc21.bias.add_(0.7)
        m.fc22.bias.add_(0.3)
    return m


def _grid(latent_dim: int, points: int, half_width: float = 9.0):
    """Grid points (G, D) over [-w, w]^D and log of the cell volume."""
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    mesh = torch.meshgrid(*[axis] * latent_dim, indexing="ij")
    z = torch.stack([t.reshape(-1) for t in mesh], 1)
    return z, latent_dim * math.log(float(axis[1] - axis[0]))


@torch.no_grad()
def _exact(m: VAE, x: torch.Tensor, points: int):
    """-log p(x) and -ELBO per image by quadrature over the latent, float64."""
    D = m.config.latent_dim
    z, log_cell = _grid(D, points)
    logits = m.decode(z)                                              # (G, P)
    target = x.reshape(len(x), 1, -1).expand(-1, len(z), -1)
    log_px_z = -F.binary_cross_entropy_with_logits(
        logits.expand(len(x), -1, -1), target, reduction="none").sum(-1)   # (N, G)
    log_prior = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
    nll = -(torch.logsumexp(log_px_z + log_prior, 1) + log_cell)
    mu, logvar = m.encode_stats(x)
    log_q = (-0.5 * (z[None] - mu[:, None]).square() / logvar.exp()[:, None]
             - 0.5 * logvar[:, None] - 0.5 * math.log(2 * math.pi)).sum(-1)   # (N, G)
    q = torch.exp(log_q + log_cell)
    nelbo = -(q * (log_px_z + log_prior - log_q)).sum(1)
    return nll, nelbo


@pytest.mark.parametrize("latent_dim, points, k", [(1, 4001, 20000), (2, 301, 8000)])
def test_estimates_match_the_integrals(latent_dim, points, k):
    m = _tiny(latent_dim)
    x = torch.rand(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    nll, nelbo = _exact(m, x, points)
    assert (nelbo - nll).min() > 0.2                 # a real gap for the IW bound to close
    est = vae_importance_nll(m, x, k=k, seed=3, per_image=True)
    assert est.nll.dtype == torch.float64 and est.nll.shape == (4,)
    # Monte Carlo errors (about 0.01 here), well inside the gaps
    torch.testing.assert_close(est.nll, nll, atol=0.03, rtol=0)
    torch.testing.assert_close(est.nelbo, nelbo, atol=0.06, rtol=0)
    assert (est.nll < est.nelbo - 0.1).all()
    one = vae_importance_nll(m, x, k=1, seed=3, per_image=True)
    assert torch.equal(one.nll, one.nelbo)           # K = 1 is the ELBO


def test_q_equal_to_the_posterior_makes_every_estimate_exact():
    # A decoder that ignores z: the posterior is the prior, and so is q.
    m = _tiny(2)
    with torch.no_grad():
        for p in (m.fc3.weight, m.fc21.weight, m.fc21.bias, m.fc22.weight, m.fc22.bias):
            p.zero_()
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    nll, nelbo = _exact(m, x, 201)
    torch.testing.assert_close(nll, nelbo, atol=1e-6, rtol=0)
    for k in (1, 7):
        est = vae_importance_nll(m, x, k=k, per_image=True)
        torch.testing.assert_close(est.nll, nll, atol=1e-6, rtol=0)
        torch.testing.assert_close(est.nelbo, nll, atol=1e-6, rtol=0)


def test_bound_per_image_and_tighter_with_k():
    m = _tiny(2, seed=1).float()
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(2))   # flat (N, 784-like)
    means = []
    for k in (1, 10, 100, 1000):
        est = vae_importance_nll(m, x, k=k, per_image=True)
        assert (est.nll <= est.nelbo + 1e-9).all()   # Jensen, image by image
        means.append(est.nll.mean().item())
    assert means == sorted(means, reverse=True) and means[0] - means[-1] > 0.1, means


def test_draws_belong_to_images():
    m = _tiny(2)
    x = torch.rand(9, 1, 2, 2, dtype=torch.float64)
    a = vae_importance_nll(m, x, k=30, seed=5, per_image=True)
    # other chunking and batching, a share of the set, the same seed: the same values
    b = vae_importance_nll(m, x, k=30, seed=5, per_image=True, max_latents=7)
    c = vae_importance_nll(m, x[4:], k=30, seed=5, per_image=True, first_index=4)
    torch.testing.assert_close(b.nll, a.nll, atol=1e-12, rtol=0)
    torch.testing.assert_close(c.nll, a.nll[4:], atol=1e-12, rtol=0)
    other = vae_importance_nll(m, x, k=30, seed=6, per_image=True)
    assert not torch.equal(other.nll, a.nll)
    mean = vae_importance_nll(m, x, k=30, seed=5)
    assert mean.nll == pytest.approx(a.nll.mean().item(), abs=1e-12)


def test_conv_vae_and_bad_input():
    m = ConvVAE(VAEConfig(kind="conv", latent_dim=3, base_channels=4, stage_convs=1))
    x = torch.rand(5, 1, 28, 28)
    m.train()
    est = vae_importance_nll(m, x, k=6, max_latents=8, per_image=True)
    assert m.training and est.nll.shape == (5,) and (est.nll <= est.nelbo + 1e-6).all()
    with pytest.raises(ValueError, match="k must be >= 1"):
        vae_importance_nll(m, x, k=0)
    with pytest.raises(TypeError, match="log_importance_weights"):
        vae_importance_nll(torch.nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match=r"images_unit must lie in \[0, 1\]"):
        vae_importance_nll(m, x * 2 - 1)
    with pytest.raises(ValueError, match="eps must have shape"):
        m.log_importance_weights(x, torch.randn(5, 2, 4))


def test_stage_convs_zero_is_the_plain_conv_vae():
    plain = ConvVAE(VAEConfig(kind="conv", base_channels=4))
    deep = ConvVAE(VAEConfig.for_arch("conv", base_channels=4))
    names = set(plain.state_dict())
    assert {k for k in names if not k.startswith(("encoder.", "decoder."))} <= set(deep.state_dict())
    assert len(deep.state_dict()) > len(names) and deep.config.latent_dim == 32
    assert VAEConfig.for_arch("mlp") == VAEConfig()
    with pytest.raises(ValueError, match="arch"):
        VAEConfig.for_arch("veegan")


# ------------------------------------------------------------------ CLI
def _one_line(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_train_and_eval_report_the_iw_nll(tmp_path, capsys):
    run = tmp_path / "v"
    assert cli.main(["train", "vae", "--arch", "conv", "--out", str(run), *TINY, "--steps", "1",
                     "--eval-n", "6", "--iw-k", "4"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--n", "8", "--iw-n", "3", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (m["n"], m["iw_k"], m["iw_n"]) == (8, 4, 3)     # the run's K, the asked images
    assert m["test_iw_nll_nats"] <= m["test_iw_nelbo_nats"]
    assert cli.main(["eval", str(run), "--n", "8", "--iw-n", "0", "--json"]) == 0
    assert "test_iw_nll_nats" not in json.loads(capsys.readouterr().out)
    # an evaluation option: a resume may change it
    assert cli.main(["train", "vae", "--arch", "conv", "--out", str(run), *TINY, "--steps", "2",
                     "--eval-n", "3", "--iw-k", "2", "--resume"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["eval"]["iw_k"] == 2
    ae = tmp_path / "a"
    assert cli.main(["train", "ae", "--out", str(ae), *TINY, "--steps", "1", "--eval-n", "0"]) == 0
    capsys.readouterr()
    assert "--iw-k does not apply to ae" in _one_line(capsys, cli.main(["eval", str(ae),
                                                                      "--iw-k", "5"]))
    assert "--iw-n does not apply to ae" in _one_line(
        capsys, cli.main(["train", "ae", "--out", str(tmp_path / "b"), "--iw-n", "5"]))
    assert "--arch does not apply to ae" in _one_line(
        capsys, cli.main(["train", "ae", "--out", str(tmp_path / "b"), "--arch", "conv"]))
    assert "arch must be one of mlp, conv for vae" in _one_line(
        capsys, cli.main(["train", "vae", "--out", str(tmp_path / "b"), "--arch", "veegan"]))
