import pytest
import torch

from resgan.nets import DBlock, Discriminator, GBlock, Generator


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("img_channels", [1, 3])
def test_shapes(resolution, depth, img_channels):
    G = Generator(z_dim=16, channels=8, depth=depth, resolution=resolution, img_channels=img_channels)
    D = Discriminator(channels=8, depth=depth, resolution=resolution, img_channels=img_channels)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, img_channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)


@pytest.mark.parametrize("resolution, stages", [(8, 1), (16, 2), (32, 3), (64, 4)])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_depth_is_blocks_per_stage(resolution, stages, depth):
    G = Generator(channels=8, depth=depth, resolution=resolution)
    D = Discriminator(channels=8, depth=depth, resolution=resolution)
    assert len(G.blocks) == len(D.blocks) == stages * depth
    assert sum(b.upsample for b in G.blocks) == stages
    assert sum(b.downsample for b in D.blocks) == stages


def test_channels_change_width():
    G = Generator(channels=16)
    assert G.fc.out_features == 16 * 4 * 4
    assert all(b.conv1.out_channels == 16 for b in G.blocks)


@pytest.mark.parametrize("cls", [Generator, Discriminator])
def test_residual_switch_changes_nothing_but_the_shortcuts(cls):
    a, b = cls(depth=3, residual=True), cls(depth=3, residual=False)
    shapes = lambda m: [(n, p.shape) for n, p in m.named_parameters()]  # noqa: E731
    assert shapes(a) == shapes(b)
    b.load_state_dict(a.state_dict())  # same weights load both ways
    x = torch.randn(2, 64) if cls is Generator else torch.randn(2, 1, 8, 8)
    a.eval(), b.eval()
    assert not torch.allclose(a(x), b(x))  # and the outputs differ: shortcuts are gone


@pytest.mark.parametrize("block_cls, kw, resize", [
    (GBlock, {"upsample": True}, lambda x: torch.nn.functional.interpolate(x, scale_factor=2)),
    (DBlock, {"downsample": True}, lambda x: torch.nn.functional.avg_pool2d(x, 2)),
    (GBlock, {"upsample": False}, lambda x: x),
])
def test_block_is_branch_plus_identity_or_branch_alone(block_cls, kw, resize):
    torch.manual_seed(0)
    res, plain = block_cls(4, residual=True, **kw), block_cls(4, residual=False, **kw)
    plain.load_state_dict(res.state_dict())
    res.eval(), plain.eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(res(x), res.branch(x) + resize(x), atol=1e-6)
        assert torch.allclose(plain(x), plain.branch(x), atol=1e-6)


def test_discriminator_is_spectrally_normalised():
    D = Discriminator(depth=2)
    D.train()
    for _ in range(30):  # power iterations converge while training
        D(torch.randn(4, 1, 8, 8))
    conv = D.blocks[0].conv1
    w = conv.weight.reshape(conv.weight.shape[0], -1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=0.05)


def test_one_real_optimizer_step_changes_both_networks():
    from resgan.losses import bce_d, bce_g

    torch.manual_seed(0)
    G, D = Generator(channels=8, z_dim=8), Discriminator(channels=8)
    g0 = [p.clone() for p in G.parameters()]
    d0 = [p.clone() for p in D.parameters()]
    opt_g = torch.optim.Adam(G.parameters(), 1e-3)
    opt_d = torch.optim.Adam(D.parameters(), 1e-3)
    real, z = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randn(8, 8)
    loss_d = bce_d(D(real), D(G(z).detach()))
    opt_d.zero_grad(); loss_d.backward(); opt_d.step()  # noqa: E702
    loss_g = bce_g(D(G(z)))
    opt_g.zero_grad(); loss_g.backward(); opt_g.step()  # noqa: E702
    assert all(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
