"""From convex-program variables back to a standard two-layer ReLU network (Linear → ReLU → Linear).

Each non-zero v_i becomes a hidden neuron with input weights v_i/√‖v_i‖ and output weight +√‖v_i‖, each
non-zero w_i one with w_i/√‖w_i‖ and −√‖w_i‖. On the training data the network's output equals
Σ_i D_i X (v_i − w_i) (the cone constraints make D_i the neuron's true pattern) and its weight decay
(β/2)(‖U‖² + ‖a‖²) equals β Σ (‖v_i‖ + ‖w_i‖), so the nonconvex objective equals the convex one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def weights_from_solution(V: np.ndarray, W: np.ndarray, bias: bool = True, tol: float = 0.0
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first-layer weight (h, d_in), first-layer bias (h,), output weight (h,)).

    With `bias`, the last row of V/W is the coefficient of the appended ones column."""
    cols, outs = [], []
    for U, s in ((V, 1.0), (W, -1.0)):
        nrm = np.linalg.norm(U, axis=0)
        for j in np.flatnonzero(nrm > tol):
            r = np.sqrt(nrm[j])
            cols.append(U[:, j] / r)
            outs.append(s * r)
    d = V.shape[0]
    if not cols:  # the zero network: keep one dead neuron so the module has valid shapes
        cols, outs = [np.zeros(d)], [0.0]
    Wt = np.stack(cols, axis=0)
    a = np.asarray(outs)
    if bias:
        return Wt[:, :-1], Wt[:, -1], a
    return Wt, np.zeros(len(a)), a


def to_module(V: np.ndarray, W: np.ndarray, bias: bool = True, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """nn.Sequential(Linear(d, h), ReLU(), Linear(h, 1)) computing Σ_j a_j relu(u_jᵀx + b_j)."""
    W1, b1, a = weights_from_solution(V, W, bias)
    h, d_in = W1.shape
    net = nn.Sequential(nn.Linear(d_in, h, dtype=dtype), nn.ReLU(), nn.Linear(h, 1, dtype=dtype))
    with torch.no_grad():
        net[0].weight.copy_(torch.as_tensor(W1, dtype=dtype))
        net[0].bias.copy_(torch.as_tensor(b1, dtype=dtype))
        net[2].weight.copy_(torch.as_tensor(a, dtype=dtype)[None, :])
        net[2].bias.zero_()
    return net


def module_weights(net: nn.Sequential) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(W1, b1, W2, b2) of a Linear → ReLU → Linear network, as float64 numpy arrays."""
    return (net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy(),
            net[2].weight.detach().double().numpy(), net[2].bias.detach().double().numpy())


def export_onnx(net: nn.Sequential, path: str | Path, input_name: str = "input", output_name: str = "output") -> Path:
    """Write the network as ONNX (Gemm → Relu → Gemm, float32, dynamic batch) with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W1, b1, W2, b2 = (x.astype(np.float32) for x in module_weights(net))
    _, d_in = W1.shape
    inits = [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(W2, "W2"), numpy_helper.from_array(b2, "b2")]
    nodes = [helper.make_node("Gemm", [input_name, "W1", "b1"], ["hidden"], name="fc1", transB=1),
             helper.make_node("Relu", ["hidden"], ["hidden_relu"], name="relu"),
             helper.make_node("Gemm", ["hidden_relu", "W2", "b2"], [output_name], name="fc2", transB=1)]
    graph = helper.make_graph(
        nodes, "convex_two_layer_relu",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", d_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="verify.train.convex")
    model.ir_version = 8
    onnx.checker.check_model(model)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(p))
    return p


def nonconvex_objective(net: nn.Sequential, X: np.ndarray, y: np.ndarray, beta: float, bias: bool = True) -> float:
    """½‖f(X) − y‖² + (β/2)(‖U‖² + ‖a‖²) where U includes the first-layer bias when `bias` (it is the
    weight of the appended ones column in the convex program)."""
    W1, b1, W2, b2 = module_weights(net)
    f = np.maximum(X @ W1.T + b1, 0.0) @ W2.T + b2
    r = f.ravel() - y
    U2 = np.sum(W1 ** 2) + (np.sum(b1 ** 2) if bias else 0.0)
    return float(0.5 * r @ r + 0.5 * beta * (U2 + np.sum(W2 ** 2)))
