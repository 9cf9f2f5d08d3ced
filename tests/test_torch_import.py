"""torch importer: the Graph computes what the module computes, and stays differentiable w.r.t. its weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from verify.errors import InputError, UnsupportedOpError
from verify.graph.ops import OPS
from verify.importers.torch import load_torch, snapshot_constants
from verify.nn import GroupSort


class Fn(nn.Module):
    """Wraps a function of the input (and optionally a linear layer) so fx traces the function's ops."""

    def __init__(self, fn, n_in: int | None = None, n_out: int | None = None):
        super().__init__()
        self.fn = fn
        self.lin = nn.Linear(n_in, n_out) if n_in else None

    def forward(self, x):
        if self.lin is not None:
            x = self.lin(x)
        return self.fn(x)


def _randomise_bn(net: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def check_equal(net: nn.Module, input_shape, n: int = 6, seed: int = 0, fold_bn=None, low=-2.0, high=2.0):
    """Graph forward == module forward (eval mode) on a random batch, in float32 and in float64."""
    was_training = net.training
    g = load_torch(net, input_shape, fold_bn=fold_bn)
    assert g.input_shape == tuple(input_shape)
    assert {nd.op for nd in g.nodes} <= set(OPS), g
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *input_shape), generator=gen) * (high - low) + low
    net.eval()
    try:
        with torch.no_grad():
            ref = net(x)
            out = g.forward(x)
        assert out.shape == ref.shape and tuple(out.shape[1:]) == g.output_shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        net64 = net.double()
        g64 = load_torch(net64, input_shape, fold_bn=fold_bn)
        with torch.no_grad():
            torch.testing.assert_close(g64.forward(x.double()), net64(x.double()), rtol=1e-10, atol=1e-12)
    finally:
        net.float()
        net.train(was_training)
    return g


# ---------------------------------------------------------------------------------------- architectures
def test_mlp_equal_and_parameters_are_the_modules_own():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    g = check_equal(net, (5,))
    assert [n.op for n in g.nodes] == ["linear", "relu", "linear", "tanh", "linear"]
    assert g.constants["0.weight"] is net[0].weight and g.constants["4.bias"] is net[4].bias
    assert g.output_shape == (3,)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh(), nn.GELU(),
                                 nn.GELU(approximate="tanh"), nn.Softplus(), nn.Softplus(beta=2.0),
                                 nn.Softmax(dim=1), nn.Softmax(dim=-1), nn.SiLU(), nn.ReLU6(),
                                 nn.Hardtanh(-0.5, 0.5), nn.Identity(), nn.Dropout(0.5), GroupSort(2),
                                 GroupSort(4), GroupSort(8)])
def test_activation_modules(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 2))
    check_equal(net, (4,))


def test_cnn_with_batchnorm_pool_flatten():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 10), nn.BatchNorm1d(10), nn.Sigmoid(),
        nn.Dropout(), nn.Linear(10, 4))
    _randomise_bn(net)
    g_live = check_equal(net, (2, 16, 16))  # default: BatchNorm as live per-channel sub/div/mul/add
    assert [n.op for n in g_live.nodes].count("sub") == 3
    assert len(snapshot_constants(g_live)) == 3  # sqrt(running_var + eps) of each BatchNorm
    g_live = load_torch(net, (2, 16, 16))
    assert g_live.constants["1.running_mean.view"]._base is net[1].running_mean
    g_fold = check_equal(net, (2, 16, 16), fold_bn=True)
    assert [n.op for n in g_fold.nodes].count("sub") == 0
    assert len(snapshot_constants(g_fold)) == 6  # weight and bias of the 3 layers that absorbed a BatchNorm
    assert not any(t.requires_grad for k, t in g_fold.constants.items() if k in snapshot_constants(g_fold))


@pytest.mark.parametrize("layer,shape", [
    (nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1), (3, 9, 9)),
    (nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=2), (4, 8, 8)),
    (nn.Conv2d(3, 2, (2, 3), padding="valid"), (3, 6, 7)),
    (nn.Conv2d(3, 2, 4, padding="same"), (3, 6, 7)),
    (nn.Conv1d(3, 5, 3, padding=2, stride=2), (3, 11)),
    (nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (3, 5, 5)),
    (nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2), (4, 3, 3)),
    (nn.MaxPool2d(3, stride=2, padding=1), (2, 7, 7)),
    (nn.MaxPool2d(2, ceil_mode=True), (2, 7, 7)),
    (nn.MaxPool2d(2, 2, padding=1, ceil_mode=True), (2, 5, 7)),  # torch drops a window starting in padding
    (nn.MaxPool2d(3, 3, padding=1, ceil_mode=True, dilation=1), (1, 8, 11)),
    (nn.AvgPool2d(2, 2, padding=1, ceil_mode=True), (2, 5, 7)),
    (nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False), (2, 6, 7)),
    (nn.AvgPool2d(3, 2, ceil_mode=True), (1, 6, 8)),
    (nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
    (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7)),
    (nn.AdaptiveAvgPool2d((1, 1)), (3, 5, 6)),
    (nn.AdaptiveAvgPool2d(2), (3, 6, 4)),
    (nn.MaxPool1d(2), (3, 8)),
    (nn.BatchNorm1d(3), (3, 8)),
])
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_spatial_layers(layer, shape):
    torch.manual_seed(0)
    net = nn.Sequential(layer, nn.Flatten())
    _randomise_bn(net)
    check_equal(net, shape)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.bn1(self.conv1(x)))))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.Sequential(ResBlock(4), ResBlock(4))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_residual_net():
    torch.manual_seed(0)
    net = ResNet()
    _randomise_bn(net)
    g = check_equal(net, (1, 8, 8))
    assert g.op_types() >= {"conv", "add", "relu", "globalavgpool", "reshape", "linear"}
    net.eval()
    check_equal(net, (1, 8, 8), fold_bn=True)


class SkipMLP(nn.Module):
    """A BatchNorm whose conv output is also used elsewhere must not be folded."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.bn = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = self.fc(x)
        return self.out(self.bn(h) - h)


def test_batchnorm_not_folded_when_layer_output_is_shared():
    torch.manual_seed(0)
    net = SkipMLP()
    _randomise_bn(net)
    g = check_equal(net, (6,), fold_bn=True)
    assert "fc.weight" in g.constants and "bn.running_mean" in g.constants


# ------------------------------------------------------------------------------------- functional ops
W = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))

FUNCTIONAL = {
    "F.relu": (lambda x: F.relu(x), (6,)),
    "torch.sigmoid": (lambda x: torch.sigmoid(x), (6,)),
    "torch.sin": (lambda x: torch.sin(x), (6,)),
    "torch.cos": (lambda x: torch.cos(x), (6,)),
    "torch.exp": (lambda x: torch.exp(x), (6,)),
    "torch.log": (lambda x: torch.log(x * x + 1.0), (6,)),
    "torch.tanh": (lambda x: torch.tanh(x), (6,)),
    "x*y": (lambda x: x * torch.sigmoid(x), (6,)),
    "x/y": (lambda x: x / (x * x + 1.0), (6,)),
    "c/x": (lambda x: 1.0 / (x * x + 1.0), (6,)),
    "x**2": (lambda x: x ** 2, (6,)),
    "x+y": (lambda x: x + torch.tanh(x) + 0.5, (6,)),
    "x-y": (lambda x: x - torch.sin(x) - 1.5, (6,)),
    "c-x": (lambda x: 2.0 - x, (6,)),
    "-x": (lambda x: -x, (6,)),
    "torch.cat": (lambda x: torch.cat([x, torch.relu(x)], dim=1), (6,)),
    "torch.cat(-1)": (lambda x: torch.cat([x, -x], dim=-1), (2, 3)),
    "torch.flatten": (lambda x: torch.flatten(x, 1), (2, 3)),
    "x.view": (lambda x: x.view(x.size(0), -1), (2, 3)),
    "x.view(shape)": (lambda x: x.view(-1, 3, 2), (2, 3)),
    "x.reshape": (lambda x: x.reshape(x.shape[0], 3, 2), (6,)),
    "x.flatten": (lambda x: x.flatten(1), (2, 3)),
    "x.permute": (lambda x: x.permute(0, 2, 1).flatten(1), (2, 3)),
    "x.transpose": (lambda x: x.transpose(1, 2).reshape(x.size(0), -1), (2, 3)),
    "x[:, a:b]": (lambda x: x[:, 1:4], (6,)),
    "x[:, a:b, i]": (lambda x: x[:, 1:3, -1], (3, 4)),
    "x[..., None]": (lambda x: x[..., ::2, None], (6,)),
    "x[:, list]": (lambda x: x[:, [0, 3, 3]], (6,)),
    "torch.clamp": (lambda x: torch.clamp(x, -0.5, 0.75), (6,)),
    "clamp min": (lambda x: x.clamp(min=0.1), (6,)),
    "torch.abs": (lambda x: torch.abs(x), (6,)),
    "x.sum(dim)": (lambda x: x.sum(dim=1), (2, 3)),
    "x.sum(dims, keepdim)": (lambda x: x.sum((1, 2), keepdim=True).flatten(1), (2, 3)),
    "x.mean(dim)": (lambda x: x.mean(-1), (2, 3)),
    "torch.mean": (lambda x: torch.mean(x, dim=1, keepdim=True), (6,)),
    "x @ W": (lambda x: x @ W.to(x.dtype), (6,)),
    "F.linear": (lambda x: F.linear(x, W.t().to(x.dtype)), (6,)),
    "unsqueeze/squeeze": (lambda x: x.unsqueeze(1).squeeze(1), (6,)),
    "torch.stack": (lambda x: torch.stack([x, x * 2], dim=1).flatten(1), (3,)),
    "torch.maximum": (lambda x: torch.maximum(x, torch.sin(x)), (6,)),
    "softmax method": (lambda x: x.softmax(dim=1), (6,)),
    "F.gelu": (lambda x: F.gelu(x), (6,)),
    "F.softplus": (lambda x: F.softplus(x, beta=3.0), (6,)),
    "F.leaky_relu": (lambda x: F.leaky_relu(x, 0.3), (6,)),
    "x.sqrt": (lambda x: (x * x + 0.1).sqrt(), (6,)),
    "F.max_pool2d": (lambda x: F.max_pool2d(x, 2).flatten(1), (1, 4, 4)),
    "F.avg_pool2d": (lambda x: F.avg_pool2d(x, 2, stride=1).flatten(1), (1, 4, 4)),
    "F.adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (1, 1)).flatten(1), (2, 4, 4)),
}


@pytest.mark.parametrize("key", sorted(FUNCTIONAL))
def test_functional_op(key):
    fn, shape = FUNCTIONAL[key]
    check_equal(Fn(fn), shape)


def test_functional_ops_after_a_layer_and_gradients():
    """The functional ops compose with a trainable layer; gradients reach its weights."""
    torch.manual_seed(0)
    net = Fn(lambda x: torch.sin(x) * torch.cos(x) + torch.exp(-x * x) / 2 - torch.clamp(x, -1, 1) ** 2, 3, 5)
    check_equal(net, (3,))
    _check_grads(net, (3,))


# --------------------------------------------------------------------------------------- trainability
def _check_grads(net: nn.Module, shape, fold_bn=None, seed=0):
    g = load_torch(net, shape, fold_bn=fold_bn)
    x = torch.randn((4, *shape), generator=torch.Generator().manual_seed(seed))
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    (g.forward(x) ** 2).sum().backward()
    got = [p.grad.clone() if p.grad is not None else None for p in params]
    for p in params:
        p.grad = None
    (net(x) ** 2).sum().backward()
    for p, gr in zip(params, got):
        assert gr is not None, "no gradient reached a parameter through graph.forward"
        torch.testing.assert_close(gr, p.grad, rtol=1e-4, atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = ResNet()
    _randomise_bn(net)
    net.eval()  # eval semantics for the module reference; BatchNorm kept live so its gamma/beta get grads
    _check_grads(net, (1, 8, 8))


def test_repeated_backward_and_snapshots():
    """Backward through the same Graph works any number of times (alpha-CROWN, training loops); computed
    constants (folded BatchNorm, expressions of parameters, parametrizations) are detached snapshots."""
    torch.manual_seed(0)

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3))
            self.fc = nn.utils.parametrizations.orthogonal(nn.Linear(4, 4))
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.fc(torch.relu(x @ (2.0 * self.w).t())) + x @ self.w.t())

    net = Scaled()
    g = check_equal(net, (3,))
    snaps = snapshot_constants(g)
    assert len(snaps) == 2  # 2 * w and the orthogonal weight
    assert not any(g.constants[k].requires_grad for k in snaps)
    assert g.constants["w"] is net.w  # x @ w.t() is linear(x, w) with the parameter itself
    assert g.constants["out.weight"] is net.out.weight
    x = torch.randn(5, 3)
    for _ in range(3):
        net.zero_grad()
        g.forward(x).sum().backward()
        assert net.out.weight.grad is not None and net.w.grad is not None
    bn_net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    _randomise_bn(bn_net)
    g2 = load_torch(bn_net, (1, 4, 4), fold_bn=True)
    for _ in range(3):
        bn_net.zero_grad()
        g2.forward(torch.randn(2, 1, 4, 4)).sum().backward()
    assert bn_net[4].weight.grad is not None and bn_net[0].weight.grad is None  # folded: a snapshot


def test_graph_follows_optimizer_updates():
    """Constants are the parameters (or live views of them): a Graph made once stays in sync while training."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 6), GroupSort(2), nn.Linear(6, 2))
    _randomise_bn(net)
    g = load_torch(net, (1, 6, 6))
    net.eval()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(8, 1, 6, 6, generator=gen)
        opt.zero_grad()
        g.forward(x).pow(2).mean().backward()
        opt.step()
        with torch.no_grad():
            torch.testing.assert_close(g.forward(x), net(x), rtol=1e-5, atol=1e-6)
    assert g.constants["4.weight"] is net[4].weight


# ------------------------------------------------------------------------------------------ groupsort
def _reference_groupsort(x: torch.Tensor, k: int) -> torch.Tensor:
    out = x.clone()
    for i in range(0, x.shape[1], k):
        out[:, i:i + k] = torch.sort(x[:, i:i + k], dim=1, descending=True).values
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_groupsort_module_sorts_groups(k):
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(k))
    torch.testing.assert_close(GroupSort(k)(x), _reference_groupsort(x, k))
    x4 = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(k))
    torch.testing.assert_close(GroupSort(k)(x4), _reference_groupsort(x4, k))


def test_groupsort_is_norm_preserving_and_rejects_bad_sizes():
    x = torch.randn(4, 8)
    y = GroupSort(4)(x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1))
    with pytest.raises(ValueError):
        GroupSort(3)(x)
    with pytest.raises(UnsupportedOpError):
        load_torch(nn.Sequential(nn.Linear(4, 5), GroupSort(2)), (4,))


def test_groupsort_imports_to_ir_op():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), GroupSort(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), GroupSort(3))
    g = check_equal(net, (1, 6, 6))
    gs = [n for n in g.nodes if n.op == "groupsort"]
    assert [n.attrs["group_size"] for n in gs] == [2, 3]
    _check_grads(net, (1, 6, 6))


# --------------------------------------------------------------------------------------------- errors
class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


@pytest.mark.parametrize("net,shape,err", [
    (nn.Sequential(nn.Linear(3, 3), nn.ELU()), (3,), UnsupportedOpError),
    (Fn(lambda x: x.view(-1)), (3,), UnsupportedOpError),
    (Fn(lambda x: x.sum()), (3,), UnsupportedOpError),
    (Fn(lambda x: torch.softmax(x, dim=0)), (3,), UnsupportedOpError),
    (Fn(lambda x: x.t()), (3,), UnsupportedOpError),
    (Fn(lambda x: x[0]), (3,), UnsupportedOpError),
    (Fn(lambda x: torch.cat([x, x], 0)), (3,), UnsupportedOpError),
    (Branchy(), (3,), InputError),
    (nn.Linear(3, 2), (4,), InputError),
])
def test_errors(net, shape, err):
    with pytest.raises(err) as ei:
        load_torch(net, shape)
    assert "torch import" in str(ei.value)


def test_unsupported_error_names_node():
    with pytest.raises(UnsupportedOpError) as ei:
        load_torch(nn.Sequential(nn.Linear(3, 3), nn.ELU()), (3,))
    assert ei.value.op == "ELU" and ei.value.node == "layer1"


def test_tracing_leaves_the_module_untouched():
    net = Fn(lambda x: x @ torch.ones(3, 2))
    before = set(vars(net)) | set(dict(net.named_buffers())) | set(dict(net.named_parameters()))
    load_torch(net, (3,))
    after = set(vars(net)) | set(dict(net.named_buffers())) | set(dict(net.named_parameters()))
    assert before == after


# ------------------------------------------------------------------------------ padding, upsample, norms
@pytest.mark.parametrize("layer,shape", [
    (nn.ZeroPad2d((1, 2, 0, 3)), (2, 4, 5)),
    (nn.ConstantPad2d(1, 0.5), (2, 4, 5)),
    (nn.ReflectionPad2d((2, 1, 1, 0)), (2, 4, 5)),
    (nn.ReplicationPad2d(1), (2, 4, 5)),
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 5, 5)),
    (nn.Conv2d(2, 3, (3, 2), padding=(2, 1), padding_mode="replicate"), (2, 5, 5)),
    (nn.Upsample(scale_factor=2), (2, 3, 4)),
    (nn.LayerNorm(6), (4, 6)),
    (nn.LayerNorm([3, 4]), (2, 3, 4)),
])
def test_pad_upsample_layernorm(layer, shape):
    torch.manual_seed(0)
    if isinstance(layer, nn.LayerNorm):
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
    check_equal(nn.Sequential(layer, nn.Flatten()), shape)


def test_normalisation_buffers_and_functional_pad():
    class Normalised(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.1, 0.2]).view(1, 2, 1, 1))
            self.register_buffer("std", torch.tensor([0.3, 0.5]).view(1, 2, 1, 1))
            self.conv = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            x = F.pad((x - self.mean) / self.std, (1, 1, 1, 1))
            return F.interpolate(self.conv(x), scale_factor=2, mode="nearest").flatten(1)

    torch.manual_seed(0)
    g = check_equal(Normalised(), (2, 4, 4))
    assert [n.op for n in g.nodes][:4] == ["sub", "div", "pad", "conv"]
