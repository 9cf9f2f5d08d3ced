"""The feed-forward network form every Lipschitz method works on, and the loaders that produce it.

A `LipNet` is f(x) = W_l σ_{l-1}(W_{l-1} ... σ_0(W_0 x)) with float64 weight matrices W_k of shape
(out, in) and one activation per hidden layer; a hidden layer may carry a skip matrix A_k, making it the
residual layer z_{k+1} = A_k z_k + σ_k(W_k z_k). Biases do not change a Lipschitz constant and are dropped.
Activations are described by `Activation`: slope-restricted scalar functions (ReLU, LeakyReLU, sigmoid,
tanh with their slope bounds [alpha, beta]), GroupSort with a group size (MaxMin = 2) and Householder
reflections on groups (the seed paper's non-slope-restricted activations).

Inputs accepted by `load_network`: a `LipNet`, a `.mat` weights file in the layout of
`shared/data/lipschitz` (cell `weights` = ReLU net, cell `W` = MaxMin net), an ONNX path, a
`verify.graph.ir.Graph`, or a torch `nn.Sequential` of Linear layers and activations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verify.errors import InputError

# slope bounds [alpha, beta] of the scalar activations LipSDP handles
SLOPES: dict[str, tuple[float, float]] = {
    "relu": (0.0, 1.0),
    "sigmoid": (0.0, 0.25),
    "tanh": (0.0, 1.0),
    "identity": (1.0, 1.0),
}


@dataclass(frozen=True)
class Activation:
    """One hidden layer's activation.

    kind: "slope" (scalar, slope-restricted to [alpha, beta]), "groupsort" (sort within consecutive groups
    of `group_size` units, descending; MaxMin = 2) or "householder" (on consecutive groups of len(v) units,
    z -> z if v.z > 0 else (I - 2 v v^T) z, with unit v).
    """

    kind: str
    alpha: float = 0.0
    beta: float = 1.0
    group_size: int = 1
    v: tuple[float, ...] = ()
    name: str = ""

    @staticmethod
    def slope(name: str, alpha: float | None = None) -> "Activation":
        if name == "leakyrelu":
            a = 0.01 if alpha is None else float(alpha)
            return Activation("slope", min(a, 1.0), max(a, 1.0), name=name)
        a, b = SLOPES[name]
        return Activation("slope", a, b, name=name)

    @staticmethod
    def groupsort(group_size: int = 2) -> "Activation":
        return Activation("groupsort", group_size=int(group_size), name="maxmin" if group_size == 2 else "groupsort")

    @staticmethod
    def householder(v) -> "Activation":
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v / np.linalg.norm(v)
        return Activation("householder", group_size=len(v), v=tuple(float(t) for t in v), name="householder")

    def describe(self) -> str:
        if self.kind == "slope":
            return f"{self.name or 'slope'}[{self.alpha:g},{self.beta:g}]"
        if self.kind == "groupsort":
            return f"groupsort({self.group_size})"
        return f"householder({self.group_size})"

    # ------------------------------------------------------------------------------------- semantics
    def apply_torch(self, x):
        """Concrete evaluation on a torch batch (N, n)."""
        import torch

        if self.kind == "slope":
            if self.name == "relu":
                return torch.relu(x)
            if self.name == "sigmoid":
                return torch.sigmoid(x)
            if self.name == "tanh":
                return torch.tanh(x)
            if self.name == "leakyrelu":
                slope = self.alpha if self.beta == 1.0 else self.beta
                return torch.where(x >= 0, x, slope * x)
            if self.name == "identity":
                return x
            raise ValueError(f"no concrete semantics for {self.name!r}")
        g = self.group_size
        xs = x.reshape(x.shape[0], -1, g)
        if self.kind == "groupsort":
            return torch.sort(xs, dim=-1, descending=True).values.reshape(x.shape)
        v = torch.tensor(self.v, dtype=x.dtype, device=x.device)
        dot = (xs * v).sum(-1, keepdim=True)
        refl = xs - 2.0 * dot * v
        return torch.where(dot > 0, xs, refl).reshape(x.shape)

    def lipschitz(self, norm: str) -> float:
        """Lipschitz constant of the activation alone in the given norm (used by the norm product)."""
        if self.kind == "slope":
            return max(abs(self.alpha), abs(self.beta))
        if self.kind == "groupsort" or norm == "2":
            return 1.0  # sorting is non-expansive in every l_p norm; a reflection is an l2 isometry
        v = np.asarray(self.v)
        H = np.eye(len(v)) - 2.0 * np.outer(v, v)
        return max(1.0, float(np.abs(H).sum(axis=1).max()))


@dataclass
class LipNet:
    """Weights W_0..W_l (each (out, in), float64) and the activations after W_0..W_{l-1}."""

    weights: list[np.ndarray]
    activations: list[Activation]
    name: str = "net"
    meta: dict[str, Any] = field(default_factory=dict)
    biases: list[np.ndarray | None] | None = None   # only for concrete evaluation (lower bounds)
    skips: list[np.ndarray | None] | None = None    # per hidden layer: A_k of z_{k+1} = A_k z_k + σ(W_k z_k)

    def __post_init__(self):
        self.weights = [np.ascontiguousarray(np.asarray(W, dtype=np.float64)) for W in self.weights]
        if self.skips is None:
            self.skips = [None] * len(self.activations)
        self.skips = [None if A is None else np.asarray(A, dtype=np.float64) for A in self.skips]
        if len(self.skips) != len(self.activations):
            raise InputError(f"{self.name}: {len(self.activations)} hidden layers but {len(self.skips)} skips")
        if self.biases is None:
            self.biases = [None] * len(self.weights)
        self.biases = [None if b is None else np.asarray(b, dtype=np.float64).ravel() for b in self.biases]
        if len(self.biases) != len(self.weights):
            raise InputError(f"{self.name}: {len(self.weights)} layers but {len(self.biases)} biases")
        if len(self.weights) == 0:
            raise InputError(f"{self.name}: network has no linear layer")
        if len(self.activations) != len(self.weights) - 1:
            raise InputError(f"{self.name}: {len(self.weights)} linear layers need {len(self.weights) - 1} "
                             f"activations between them, got {len(self.activations)}")
        for k in range(1, len(self.weights)):
            if self.weights[k].shape[1] != self.weights[k - 1].shape[0]:
                raise InputError(f"{self.name}: layer {k} expects {self.weights[k].shape[1]} inputs but layer "
                                 f"{k - 1} has {self.weights[k - 1].shape[0]} outputs")
        for k, A in enumerate(self.skips):
            if A is not None and A.shape != (self.weights[k].shape[0], self.weights[k].shape[1]):
                raise InputError(f"{self.name}: skip of layer {k} has shape {A.shape}, expected "
                                 f"{self.weights[k].shape}")
        for k, act in enumerate(self.activations):
            n = self.weights[k].shape[0]
            if act.kind != "slope" and n % act.group_size:
                raise InputError(f"{self.name}: {act.describe()} after layer {k} needs a width divisible by "
                                 f"{act.group_size}, got {n}")

    @property
    def residual(self) -> bool:
        return any(A is not None for A in self.skips)

    @property
    def dims(self) -> list[int]:
        return [self.weights[0].shape[1]] + [W.shape[0] for W in self.weights]

    def describe(self) -> str:
        acts = sorted({a.describe() for a in self.activations}) or ["none"]
        res = ", residual" if self.residual else ""
        return f"{'-'.join(map(str, self.dims))} ({', '.join(acts)}{res})"

    def forward_torch(self, x):
        """f(x) on a torch batch (N, n_0), in x's dtype."""
        import torch

        for k, W in enumerate(self.weights):
            x_in = x
            x = x @ torch.as_tensor(W, dtype=x.dtype, device=x.device).T
            if self.biases[k] is not None:
                x = x + torch.as_tensor(self.biases[k], dtype=x.dtype, device=x.device)
            if k < len(self.activations):
                x = self.activations[k].apply_torch(x)
                if self.skips[k] is not None:
                    x = x + x_in @ torch.as_tensor(self.skips[k], dtype=x.dtype, device=x.device).T
        return x

    def with_weights(self, weights: list[np.ndarray]) -> "LipNet":
        """Same activations and skips, new weights (biases dropped: they do not matter to the bounds)."""
        return LipNet(weights, list(self.activations), self.name, dict(self.meta), skips=list(self.skips))


# ------------------------------------------------------------------------------------------- loaders
def load_network(model: Any, input_shape=None) -> LipNet:
    """Turn any supported model description into a `LipNet` (see the module docstring)."""
    if isinstance(model, LipNet):
        return model
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".mat":
            return load_mat(path)
        if suffix == ".onnx":
            from verify.importers.onnx import load_onnx  # lazily: heavy, and written separately

            return from_graph(load_onnx(str(path)), name=path.stem)
        raise InputError(f"{path}: unsupported model file (expected .onnx or .mat)")
    try:
        from verify.graph.ir import Graph
    except ImportError:  # pragma: no cover
        Graph = None
    if Graph is not None and isinstance(model, Graph):
        return from_graph(model)
    try:
        import torch.nn as nn
    except ImportError:  # pragma: no cover
        nn = None
    if nn is not None and isinstance(model, nn.Module):
        return from_torch(model)
    if isinstance(model, (list, tuple)) and all(hasattr(W, "shape") for W in model):
        ws = [np.asarray(W, dtype=np.float64) for W in model]
        return LipNet(ws, [Activation.slope("relu") for _ in ws[:-1]])
    raise InputError(f"unsupported model type {type(model).__name__} (expected a .mat/.onnx path, Graph, "
                     f"nn.Sequential or LipNet)")


def load_mat(path: str | Path) -> LipNet:
    """A `.mat` file: cell `weights` (ReLU) or cell `W` (MaxMin after every layer but the last)."""
    import scipy.io as sio

    path = Path(path)
    try:
        data = sio.loadmat(str(path))
    except Exception as e:
        raise InputError(f"{path}: cannot read .mat file: {e}") from None
    if "weights" in data:
        cell, act = data["weights"], Activation.slope("relu")
    elif "W" in data:
        cell, act = data["W"], Activation.groupsort(2)
    else:
        keys = [k for k in data if not k.startswith("__")]
        raise InputError(f"{path}: expected a cell named 'weights' (ReLU net) or 'W' (MaxMin net), found {keys}")
    ws = [np.asarray(cell.flat[i], dtype=np.float64) for i in range(cell.size)]
    if any(W.ndim != 2 for W in ws):
        raise InputError(f"{path}: every weight must be a 2-D matrix")
    if path.stem.lower().startswith("resweights"):
        return _residual_mat(ws, path)
    return LipNet(ws, [act for _ in ws[:-1]], name=path.stem, meta={"source": str(path)})


def _residual_mat(ws: list[np.ndarray], path: Path) -> LipNet:
    """QCs_MaxMin residual nets: x_1 = W_1 u, x_{i+1} = x_i + MaxMin(W_i x_i) (i = 2..L-1), y = W_L x_{L-1}.

    The form is that of the LMI in QCs_MaxMin's LipschitzEstimationRes.m (the MaxMin input of block i is
    W_i x_i and its output is added to x_i unchanged; their trivial bound is |W_1| prod(1 + |W_i|) |W_L|).
    Whether a MaxMin also follows W_1 is not stated there. The net returned has one (its QCs also hold for
    the identity, so every upper bound covers both readings); meta["variants"] holds the reading without
    it, and lower bounds are taken as the smaller of the two.
    """
    n = ws[0].shape[0]
    if len(ws) < 3 or any(W.shape != (n, n) for W in ws[1:-1]) or ws[-1].shape[1] != n:
        raise InputError(f"{path}: a residual net needs W_1 (n x in), square n x n blocks and W_L (out x n); "
                         f"got shapes {[W.shape for W in ws]}")
    mm = Activation.groupsort(2)
    skips = [None] + [np.eye(n) for _ in ws[1:-1]]
    meta = {"source": str(path), "residual": "x + MaxMin(W x)"}
    linear_first = LipNet(ws, [Activation.slope("identity")] + [mm] * (len(ws) - 2), name=path.stem,
                          skips=skips, meta=dict(meta))
    meta["variants"] = [linear_first]
    return LipNet(ws, [mm] * (len(ws) - 1), name=path.stem, skips=skips, meta=meta)


def _merge_linear(layers: list, W: np.ndarray, b: np.ndarray | None = None) -> None:
    """Append x -> Wx + b, composing it with the previous affine map when no activation separates them."""
    if layers and layers[-1][0] == "linear":
        _, W0, b0 = layers[-1]
        bn = None if b0 is None else W @ b0
        if b is not None:
            bn = b if bn is None else bn + b
        layers[-1] = ("linear", W @ W0, bn)
    else:
        layers.append(("linear", W, None if b is None else np.asarray(b, dtype=np.float64).ravel()))


def _add_bias(layers: list, b: np.ndarray) -> None:
    """A constant added after the last affine map (an ONNX Add after a MatMul)."""
    if layers and layers[-1][0] == "linear":
        _, W0, b0 = layers[-1]
        b = np.broadcast_to(np.asarray(b, dtype=np.float64).ravel(), (W0.shape[0],))
        layers[-1] = ("linear", W0, b if b0 is None else b0 + b)


def _finish(layers: list, name: str, n_in: int | None) -> LipNet:
    if not layers:
        raise InputError(f"{name}: no linear layer found")
    if layers[0][0] != "linear":
        if n_in is None:
            raise InputError(f"{name}: network starts with an activation and its input size is unknown")
        layers.insert(0, ("linear", np.eye(n_in), None))
    if layers[-1][0] != "linear":
        n = [e for e in layers if e[0] == "linear"][-1][1].shape[0]
        layers.append(("linear", np.eye(n), None))
    weights, biases, acts = [], [], []
    for entry in layers:
        if entry[0] == "linear":
            weights.append(entry[1])
            biases.append(entry[2])
        else:
            if len(acts) == len(weights):
                # two activations in a row: an identity layer between them
                weights.append(np.eye(weights[-1].shape[0]))
                biases.append(None)
            acts.append(entry[1])
    return LipNet(weights, acts, name=name, biases=biases)


def from_torch(module) -> LipNet:
    """A torch nn.Sequential (nested Sequentials allowed) of Linear layers and activations."""
    import torch.nn as nn

    layers: list = []

    def walk(m):
        if isinstance(m, nn.Sequential):
            for c in m:
                walk(c)
        elif isinstance(m, nn.Linear):
            b = None if m.bias is None else m.bias.detach().double().cpu().numpy()
            _merge_linear(layers, m.weight.detach().double().cpu().numpy(), b)
        elif isinstance(m, nn.ReLU):
            layers.append(("act", Activation.slope("relu")))
        elif isinstance(m, nn.LeakyReLU):
            layers.append(("act", Activation.slope("leakyrelu", m.negative_slope)))
        elif isinstance(m, nn.Sigmoid):
            layers.append(("act", Activation.slope("sigmoid")))
        elif isinstance(m, nn.Tanh):
            layers.append(("act", Activation.slope("tanh")))
        elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            pass
        elif any(c.__name__ == "GroupSort" for c in type(m).__mro__):  # verify.nn.GroupSort / MaxMin
            g = getattr(m, "group_size", None) or getattr(m, "groupsize", None) or 2
            if getattr(m, "descending", True) is False:
                raise InputError("GroupSort with ascending order is not supported by the Lipschitz bounds")
            layers.append(("act", Activation.groupsort(int(g))))
        else:
            raise InputError(f"torch module: unsupported layer {type(m).__name__} for Lipschitz bounds")

    walk(module)
    n_in = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            n_in = m.in_features
            break
    return _finish(layers, type(module).__name__, n_in)


def _conv_matrix(graph, node, x_name: str) -> np.ndarray:
    """The matrix of a constant-weight conv node, by applying it to the identity basis (small inputs only)."""
    import torch

    from verify.graph import ops as graph_ops

    in_shape = graph.shape_of(x_name)
    n = int(np.prod(in_shape))
    if n > 4096:
        raise InputError(f"node {node.name!r}: conv on {n} inputs is too large for the matrix form (limit 4096)")
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    args = [eye] + [graph.const(i, torch.float64) for i in node.inputs[1:2]]  # no bias
    out = graph_ops.evaluate("conv", args, node.attrs)
    return out.reshape(n, -1).T.numpy().copy()


def _conv_bias(graph, node) -> np.ndarray | None:
    """The conv's bias broadcast to its flattened output (channel-major)."""
    import torch

    if len(node.inputs) < 3:
        return None
    b = graph.const(node.inputs[2], torch.float64).detach().cpu().numpy().ravel()
    per_channel = int(np.prod(node.shape[1:])) if len(node.shape) > 1 else 1
    return np.repeat(b, per_channel)


def from_graph(graph, name: str | None = None) -> LipNet:
    """Walk a `verify.graph.ir.Graph` whose nodes form a chain of linear layers and activations."""
    import torch

    name = name or getattr(graph, "name", "graph")
    layers: list = []
    current = graph.input_name
    for node in graph.nodes:
        dyn = [i for i in node.inputs if not graph.is_const(i)]
        if len(dyn) != 1 or dyn[0] != current:
            raise InputError(f"{name}: node {node.name!r} ({node.op}) is not part of a simple chain; "
                             f"Lipschitz bounds need a feed-forward network")
        op = node.op
        if op == "linear":
            if not graph.is_const(node.inputs[1]):
                raise InputError(f"{name}: node {node.name!r}: linear weight is not a constant")
            b = (graph.const(node.inputs[2], torch.float64).detach().cpu().numpy()
                 if len(node.inputs) > 2 and graph.is_const(node.inputs[2]) else None)
            _merge_linear(layers, graph.const(node.inputs[1], torch.float64).detach().cpu().numpy(), b)
        elif op == "matmul" and graph.is_const(node.inputs[1]) and node.inputs[0] == current:
            B = graph.const(node.inputs[1], torch.float64).detach().cpu().numpy()
            if B.ndim != 2:
                raise InputError(f"{name}: node {node.name!r}: matmul weight must be 2-D")
            _merge_linear(layers, B.T.copy())
        elif op in ("add", "sub") and any(graph.is_const(i) for i in node.inputs):
            # a bias: irrelevant to the upper bounds, kept for evaluating the network (lower bounds)
            cst = [i for i in node.inputs if graph.is_const(i)][0]
            b = graph.const(cst, torch.float64).detach().cpu().numpy()
            if op == "sub":
                if node.inputs[0] == cst:
                    raise InputError(f"{name}: node {node.name!r}: constant minus activation is not supported")
                b = -b
            if b.size == 1 or (layers and layers[-1][0] == "linear" and b.size == layers[-1][1].shape[0]):
                _add_bias(layers, b)
            else:
                raise InputError(f"{name}: node {node.name!r}: bias of size {b.size} does not follow a linear layer")
        elif op == "conv":
            _merge_linear(layers, _conv_matrix(graph, node, current), _conv_bias(graph, node))
        elif op in ("relu", "sigmoid", "tanh"):
            layers.append(("act", Activation.slope(op)))
        elif op == "leakyrelu":
            layers.append(("act", Activation.slope("leakyrelu", node.attrs.get("alpha", 0.01))))
        elif op == "groupsort":
            layers.append(("act", Activation.groupsort(int(node.attrs.get("group_size", 2)))))
        elif op in ("reshape", "flatten", "identity", "dropout"):
            pass
        else:
            raise InputError(f"{name}: node {node.name!r}: unsupported operator {op!r} for Lipschitz bounds")
        current = node.name
    if current != graph.output:
        raise InputError(f"{name}: graph output {graph.output!r} is not the end of the layer chain")
    return _finish(layers, name, graph.input_size)
