"""Graph normalisation passes: each one keeps the network's outputs and removes what it claims to."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from models import make_model
from verify.graph.ir import Graph, Node
from verify.graph import passes
from verify.importers.onnx import convert

R = np.random.default_rng(3)


def w(*shape):
    return R.standard_normal(shape).astype(np.float32)


def pos(*shape):
    return R.uniform(0.5, 1.5, shape).astype(np.float32)


def node(op, ins, outs=("y",), **at):
    return helper.make_node(op, list(ins), list(outs), **at)


def assert_same_function(a: Graph, b: Graph, n: int = 20):
    x = torch.from_numpy(R.uniform(-2, 2, (n, a.input_size)))
    ya, yb = a.forward_flat(x), b.forward_flat(x)
    assert ya.shape == yb.shape
    assert torch.allclose(ya, yb, rtol=1e-9, atol=1e-9)
    assert a.output_shape == b.output_shape


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def snapshot(g: Graph):
    return [repr(n) for n in g.nodes], dict(g.constants), g.output


def test_drop_noops():
    c = {"zeros": torch.zeros(4, dtype=torch.float64), "ones": torch.ones(1, 4, dtype=torch.float64),
         "bias": torch.arange(4, dtype=torch.float64)}
    nodes = [
        Node("r", "reshape", ["x"], {"shape": [2, 4]}, (2, 4)),
        Node("r2", "reshape", ["r"], {"shape": [2, 4]}, (2, 4)),
        Node("t", "transpose", ["r2"], {"perm": [0, 1, 2]}, (2, 4)),
        Node("a", "add", ["t", "zeros"], {}, (2, 4)),
        Node("m", "mul", ["a", "ones"], {}, (2, 4)),
        Node("k", "cast", ["m"], {"to": "float"}, (2, 4)),
        Node("s", "slice", ["k"], {"axes": [2], "starts": [0], "ends": [100], "steps": [1]}, (2, 4)),
        Node("b", "add", ["s", "bias"], {}, (2, 4)),  # not a no-op
        Node("out", "relu", ["b"], {}, (2, 4)),
    ]
    g = Graph("x", (2, 4), nodes, c, "out")
    before = snapshot(g)
    h = passes.drop_noops(g)
    assert ops(h) == ["add", "relu"]
    assert h.nodes[0].inputs == ["x", "bias"]
    assert_same_function(g, h)
    assert snapshot(g) == before  # the input graph is untouched


def test_drop_noops_keeps_output_when_last_node_is_noop():
    g = Graph("x", (3,), [Node("r", "relu", ["x"], {}, (3,)), Node("o", "reshape", ["r"], {"shape": [3]}, (3,))],
              {}, "o")
    h = passes.drop_noops(g)
    assert ops(h) == ["relu"] and h.output == "r"
    assert_same_function(g, h)


def test_merge_reshapes():
    nodes = [
        Node("a", "reshape", ["x"], {"shape": [6, 2]}, (6, 2)),
        Node("b", "reshape", ["a"], {"shape": [3, 4]}, (3, 4)),
        Node("c", "reshape", ["b"], {"shape": [12]}, (12,)),
        Node("out", "relu", ["c"], {}, (12,)),
    ]
    g = Graph("x", (2, 6), nodes, {}, "out")
    h = passes.merge_reshapes(g)
    assert ops(h) == ["reshape", "relu"] and h.nodes[0].inputs == ["x"] and h.nodes[0].attrs["shape"] == [12]
    assert_same_function(g, h)
    # an inner reshape with another reader stays
    nodes2 = nodes[:2] + [Node("s", "sin", ["a"], {}, (6, 2)), Node("sr", "reshape", ["s"], {"shape": [3, 4]}, (3, 4)),
                          Node("out", "add", ["b", "sr"], {}, (3, 4))]
    g2 = Graph("x", (2, 6), nodes2, {}, "out")
    h2 = passes.merge_reshapes(g2)
    assert ops(h2).count("reshape") == 3
    assert_same_function(g2, h2)


def test_remove_dead():
    c = {"W": torch.randn(3, 4, dtype=torch.float64), "unused": torch.ones(2, dtype=torch.float64)}
    nodes = [Node("d", "sin", ["x"], {}, (4,)), Node("l", "linear", ["x", "W"], {}, (3,)),
             Node("dd", "exp", ["d"], {}, (4,)), Node("out", "relu", ["l"], {}, (3,))]
    g = Graph("x", (4,), nodes, c, "out")
    h = passes.remove_dead(g)
    assert ops(h) == ["linear", "relu"] and set(h.constants) == {"W"}
    assert_same_function(g, h)


@pytest.mark.parametrize("form", ["add", "add_left", "sub", "sub_left", "bias_2d"])
def test_fuse_matmul_add(form):
    W, b = w(5, 3), w(3)
    if form == "add":
        last = node("Add", ["m", "b"])
    elif form == "add_left":
        last = node("Add", ["b", "m"])
    elif form == "sub":
        last = node("Sub", ["m", "b"])
    elif form == "sub_left":
        last = node("Sub", ["b", "m"])
    else:
        b = w(1, 3)
        last = node("Add", ["m", "b"])
    m = make_model([node("MatMul", ["x", "W"], ["m"]), last, ], [1, 5], {"W": W, "b": b})
    m.graph.node.append(node("Relu", ["y"], ["z"]))
    m.graph.output[0].name = "z"
    g = convert(m)
    assert ops(g) == ["matmul", "add" if "add" in form or form == "bias_2d" else "sub", "relu"]
    h = passes.fuse_matmul_add(g)
    assert ops(h) == ["linear", "relu"]
    assert h.constants[h.nodes[0].inputs[1]].shape == (3, 5)
    assert h.constants[h.nodes[0].inputs[2]].shape == (3,)
    assert_same_function(g, h)


def test_fuse_matmul_add_needs_single_consumer_and_per_output_bias():
    # the matmul output is read twice: it becomes linear, the add stays separate
    m = make_model([node("MatMul", ["x", "W"], ["m"]), node("Add", ["m", "b"], ["a"]), node("Mul", ["m", "a"])],
                   [1, 4], {"W": w(4, 3), "b": w(3)})
    g = convert(m)
    h = passes.fuse_matmul_add(g)
    assert ops(h) == ["linear", "add", "mul"]
    assert_same_function(g, h)
    # a bias that varies along a non-output axis cannot be folded
    m = make_model([node("MatMul", ["x", "W"], ["m"]), node("Add", ["m", "b"])], [1, 2, 4], {"W": w(4, 3), "b": w(2, 1)})
    g = convert(m)
    h = passes.fuse_matmul_add(g)
    assert ops(h) == ["linear", "add"]
    assert_same_function(g, h)


def _bn(inp, out, c):
    return node("BatchNormalization", [inp, f"{out}g", f"{out}b", f"{out}m", f"{out}v"], [out], epsilon=1e-3), \
        {f"{out}g": pos(c), f"{out}b": w(c), f"{out}m": w(c), f"{out}v": pos(c)}


@pytest.mark.parametrize("layer", ["conv", "conv_nobias", "gemm", "convtranspose"])
def test_fold_batchnorm(layer):
    if layer.startswith("conv") and layer != "convtranspose":
        ins = ["x", "W", "B"] if layer == "conv" else ["x", "W"]
        first = node("Conv", ins, ["c"], pads=[1, 1, 1, 1])
        inits = {"W": w(3, 2, 3, 3), "B": w(3)}
        shape = [1, 2, 5, 5]
    elif layer == "convtranspose":
        first = node("ConvTranspose", ["x", "W", "B"], ["c"], strides=[2, 2])
        inits = {"W": w(2, 3, 2, 2), "B": w(3)}
        shape = [1, 2, 3, 3]
    else:
        first = node("Gemm", ["x", "W", "B"], ["c"], transB=1)
        inits = {"W": w(3, 4), "B": w(3)}
        shape = [1, 4]
    bn, bn_init = _bn("c", "y", 3)
    m = make_model([first, bn], shape, {**inits, **bn_init})
    g = convert(m)
    assert ops(g)[-2:] == ["mul", "add"]
    h = passes.fold_batchnorm(g)
    assert ops(h) == [ops(g)[0]]
    assert_same_function(g, h)


def test_fold_batchnorm_skips_shared_layer_and_spatial_scale():
    bn, bn_init = _bn("c", "b", 3)
    m = make_model([node("Conv", ["x", "W"], ["c"]), bn, node("Add", ["b", "c"])], [1, 2, 4, 4],
                   {"W": w(3, 2, 1, 1), **bn_init})
    g = convert(m)
    h = passes.fold_batchnorm(g)
    assert ops(h) == ["conv", "mul", "add", "add"]
    assert_same_function(g, h)
    m = make_model([node("Conv", ["x", "W"], ["c"]), node("Mul", ["c", "s"])], [1, 2, 4, 4],
                   {"W": w(3, 2, 1, 1), "s": w(1, 4, 1)})
    g = convert(m)
    assert ops(passes.fold_batchnorm(g)) == ["conv", "mul"]


def test_normalise_composite_network():
    bn, bn_init = _bn("c", "bn", 4)
    m = make_model([
        node("Identity", ["x"], ["i"]),
        node("Conv", ["i", "W", "B"], ["c"], pads=[1, 1, 1, 1]), bn,
        node("Relu", ["bn"], ["r"]),
        node("Reshape", ["r", "s1"], ["f1"]), node("Reshape", ["f1", "s2"], ["f2"]),
        node("Dropout", ["f2"], ["d"]),
        node("MatMul", ["d", "M"], ["mm"]), node("Add", ["mm", "b"], ["y0"]),
        node("Mul", ["y0", "one"], ["y"]),
    ], [1, 2, 3, 3], {"W": w(4, 2, 3, 3), "B": w(4), **bn_init, "s1": np.array([1, 4, 9], np.int64),
                      "s2": np.array([1, 36], np.int64), "M": w(36, 5), "b": w(5), "one": np.float32(1.0)})
    g = convert(m)
    h = passes.normalise(g)
    assert ops(h) == ["conv", "relu", "reshape", "linear"]
    assert_same_function(g, h)
    # normalising twice changes nothing
    assert [repr(n) for n in passes.normalise(h).nodes] == [repr(n) for n in h.nodes]
