"""Per-operator ONNX import tests: a tiny model per op (tests/models.py), IR forward vs onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from models import make_model, run_ort, single_op
from verify.errors import InputError, UnsupportedOpError
from verify.importers import load_onnx

ort = pytest.importorskip("onnxruntime")

R = np.random.default_rng(0)


def w(*shape):
    return R.standard_normal(shape).astype(np.float32)


def pos(*shape):
    return R.uniform(0.5, 1.5, shape).astype(np.float32)


def i64(*v):
    return np.asarray(v, dtype=np.int64)


def node(op, ins, outs=("y",), **at):
    return helper.make_node(op, list(ins), list(outs), **at)


def chain(shape, nodes, inits=None, opset=13, **kw):
    return make_model(nodes, shape, inits or {}, opset, **kw)


# (id, model, low, high): input drawn uniformly in [low, high]
CASES = [
    ("add_bcast", single_op("Add", [1, 3, 4], [w(4)]), -1, 1),
    ("sub_const_left", chain([1, 3, 4], [node("Sub", ["c", "x"])], {"c": w(1, 3, 4)}), -1, 1),
    ("mul_chan", single_op("Mul", [1, 3, 2, 2], [w(3, 1, 1)]), -1, 1),
    ("div", single_op("Div", [1, 5], [pos(5)]), -1, 1),
    ("div_var_denominator", chain([1, 5], [node("Abs", ["x"], ["a"]), node("Add", ["a", "one"], ["d"]),
                                           node("Div", ["x", "d"])], {"one": np.float32(1)}), -1, 1),
    ("neg", single_op("Neg", [1, 4]), -1, 1),
    ("pow", single_op("Pow", [1, 4], [np.float32(3.0)]), -1, 1),
    ("add_two_vars", chain([1, 4], [node("Relu", ["x"], ["r"]), node("Add", ["x", "r"])]), -1, 1),
    ("sum3", chain([1, 4], [node("Relu", ["x"], ["r"]), node("Sum", ["x", "r", "c"])], {"c": w(4)}), -1, 1),
    ("matmul", single_op("MatMul", [1, 6], [w(6, 3)]), -1, 1),
    ("matmul_rank3", single_op("MatMul", [1, 2, 6], [w(6, 3)]), -1, 1),
    ("matmul_bias", chain([1, 6], [node("MatMul", ["x", "W"], ["m"]), node("Add", ["m", "b"])],
                          {"W": w(6, 3), "b": w(3)}), -1, 1),
    ("matmul_W_x_vector", chain([3], [node("MatMul", ["W", "x"], ["m"]), node("Add", ["m", "b"])],
                                {"W": w(4, 3), "b": w(4)}), -1, 1),
    ("matmul_x_W_vector", single_op("MatMul", [3], [w(3, 2)]), -1, 1),
    ("matmul_const_left_matrix", chain([1, 3, 2], [node("MatMul", ["W", "x"])], {"W": w(4, 3)}), -1, 1),
    ("gemm", single_op("Gemm", [1, 5], [w(4, 5), w(4)], transB=1, alpha=0.5, beta=2.0), -1, 1),
    ("gemm_noT_C2d", single_op("Gemm", [1, 5], [w(5, 4), w(1, 4)]), -1, 1),
    ("gemm_noC", single_op("Gemm", [1, 5], [w(5, 4)]), -1, 1),
    ("conv", single_op("Conv", [1, 2, 6, 6], [w(3, 2, 3, 3), w(3)], pads=[1, 1, 1, 1], strides=[2, 2]), -1, 1),
    ("conv_asym_dil_group", single_op("Conv", [1, 4, 7, 7], [w(4, 2, 2, 2)], pads=[0, 1, 1, 0],
                                      dilations=[2, 1], group=2), -1, 1),
    ("conv_same_upper", single_op("Conv", [1, 2, 5, 5], [w(2, 2, 2, 2)], auto_pad="SAME_UPPER", strides=[2, 2]), -1, 1),
    ("conv1d", single_op("Conv", [1, 2, 8], [w(3, 2, 3), w(3)], pads=[1, 1]), -1, 1),
    ("convtranspose", single_op("ConvTranspose", [1, 2, 4, 4], [w(2, 3, 3, 3), w(3)], strides=[2, 2],
                                pads=[1, 1, 1, 1], output_padding=[1, 1]), -1, 1),
    ("convtranspose_asym", single_op("ConvTranspose", [1, 2, 4, 4], [w(2, 3, 3, 3)], pads=[0, 0, 1, 1]), -1, 1),
    ("convtranspose_pads_begin_gt_end", single_op("ConvTranspose", [1, 2, 4, 4], [w(2, 3, 3, 3)], pads=[1, 2, 0, 1],
                                                  strides=[2, 1]), -1, 1),
    ("convtranspose_group_dil", single_op("ConvTranspose", [1, 4, 3, 3], [w(4, 2, 2, 2), w(4)], group=2,
                                          dilations=[2, 1]), -1, 1),
    ("maxpool_dil_ceil", single_op("MaxPool", [1, 1, 7, 7], kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2],
                                   ceil_mode=1), -1, 1),
    ("maxpool_same_lower", single_op("MaxPool", [1, 1, 6, 6], kernel_shape=[2, 2], auto_pad="SAME_LOWER"), -1, 1),
    ("avgpool_ceil", single_op("AveragePool", [1, 1, 6, 6], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                               ceil_mode=1), -1, 1),
    ("avgpool1d_same", single_op("AveragePool", [1, 2, 7], kernel_shape=[2], strides=[2], auto_pad="SAME_UPPER"), -1, 1),
    ("conv3d", single_op("Conv", [1, 1, 3, 4, 4], [w(2, 1, 2, 2, 2)]), -1, 1),
    ("batchnorm", single_op("BatchNormalization", [1, 3, 4, 4], [pos(3), w(3), w(3), pos(3)], epsilon=1e-3), -1, 1),
    ("conv_bn", chain([1, 2, 5, 5], [node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
                                     node("BatchNormalization", ["c", "g", "be", "m", "v"])],
                      {"W": w(3, 2, 3, 3), "B": w(3), "g": pos(3), "be": w(3), "m": w(3), "v": pos(3)}), -1, 1),
    ("gemm_bn1d", chain([1, 5], [node("Gemm", ["x", "W", "B"], ["c"], transB=1),
                                 node("BatchNormalization", ["c", "g", "be", "m", "v"])],
                        {"W": w(3, 5), "B": w(3), "g": pos(3), "be": w(3), "m": w(3), "v": pos(3)}), -1, 1),
    ("relu", single_op("Relu", [1, 6]), -1, 1),
    ("leakyrelu", single_op("LeakyRelu", [1, 6], alpha=0.1), -1, 1),
    ("sigmoid", single_op("Sigmoid", [1, 6]), -3, 3),
    ("tanh", single_op("Tanh", [1, 6]), -3, 3),
    ("sin", single_op("Sin", [1, 6]), -3, 3),
    ("cos", single_op("Cos", [1, 6]), -3, 3),
    ("exp", single_op("Exp", [1, 6]), -2, 2),
    ("log", single_op("Log", [1, 6]), 0.1, 3),
    ("sqrt", single_op("Sqrt", [1, 6]), 0.1, 3),
    ("reciprocal", single_op("Reciprocal", [1, 6]), 0.5, 3),
    ("softplus", single_op("Softplus", [1, 6]), -3, 3),
    ("erf", single_op("Erf", [1, 6]), -2, 2),
    ("gelu", single_op("Gelu", [1, 6], opset=20), -3, 3),
    ("gelu_tanh", single_op("Gelu", [1, 6], opset=20, approximate="tanh"), -3, 3),
    ("abs", single_op("Abs", [1, 6]), -1, 1),
    ("sign", single_op("Sign", [1, 6]), -1, 1),
    ("floor", single_op("Floor", [1, 6]), -3, 3),
    ("hardsigmoid", single_op("HardSigmoid", [1, 6]), -4, 4),
    ("softmax13", single_op("Softmax", [1, 2, 5]), -2, 2),
    ("softmax11_coerced", single_op("Softmax", [1, 2, 5], opset=11, axis=1), -2, 2),
    ("softmax13_axis1", single_op("Softmax", [1, 2, 5], axis=1), -2, 2),
    ("clip_attr", single_op("Clip", [1, 6], opset=6, min=-0.5, max=0.3), -1, 1),
    ("clip_input", single_op("Clip", [1, 6], [np.float32(-0.5), np.float32(0.3)], opset=13), -1, 1),
    ("clip_min_only", single_op("Clip", [1, 6], [np.float32(-0.2)], opset=13), -1, 1),
    ("maxpool", single_op("MaxPool", [1, 2, 6, 6], kernel_shape=[2, 2], strides=[2, 2]), -1, 1),
    ("maxpool_pad_stride1", single_op("MaxPool", [1, 2, 5, 5], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), -1, 1),
    ("maxpool_ceil", single_op("MaxPool", [1, 1, 5, 5], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), -1, 1),
    ("avgpool", single_op("AveragePool", [1, 2, 6, 6], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), -1, 1),
    ("avgpool_incl_pad", single_op("AveragePool", [1, 2, 6, 6], kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 1, 1, 1], count_include_pad=1), -1, 1),
    ("avgpool_asym", single_op("AveragePool", [1, 1, 5, 5], kernel_shape=[2, 2], pads=[0, 0, 1, 1]), -1, 1),
    ("globalavgpool", single_op("GlobalAveragePool", [1, 3, 4, 5]), -1, 1),
    ("globalmaxpool", single_op("GlobalMaxPool", [1, 3, 4, 5]), -1, 1),
    ("pad_attr", single_op("Pad", [1, 2, 3, 3], opset=9, pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5), -1, 1),
    ("pad_input", single_op("Pad", [1, 2, 3, 3], [i64(0, 0, 1, 0, 0, 0, 0, 2), np.float32(-1.0)]), -1, 1),
    ("pad_reflect", single_op("Pad", [1, 2, 4, 4], [i64(0, 0, 1, 1, 0, 0, 1, 1)], mode="reflect"), -1, 1),
    ("pad_edge", single_op("Pad", [1, 2, 4, 4], [i64(0, 0, 2, 0, 0, 0, 0, 1)], mode="edge"), -1, 1),
    ("flatten", single_op("Flatten", [1, 2, 3, 4]), -1, 1),
    ("flatten_axis2", single_op("Flatten", [1, 2, 3, 4], axis=2), -1, 1),
    ("flatten_axis0", single_op("Flatten", [1, 2, 3], axis=0), -1, 1),
    ("reshape_0_-1", single_op("Reshape", [1, 2, 3, 4], [i64(0, -1, 4)]), -1, 1),
    ("reshape_drop_batch", chain([1, 6], [node("Reshape", ["x", "s"], ["r"]), node("MatMul", ["W", "r"])],
                                 {"s": i64(6), "W": w(2, 6)}), -1, 1),
    ("transpose", single_op("Transpose", [1, 2, 3, 4], perm=[0, 3, 1, 2]), -1, 1),
    ("transpose_size1", single_op("Transpose", [1, 5], perm=[1, 0]), -1, 1),
    ("squeeze_attr", single_op("Squeeze", [1, 3, 1, 2], opset=11, axes=[2]), -1, 1),
    ("squeeze_input", single_op("Squeeze", [1, 3, 1, 2], [i64(-2)]), -1, 1),
    ("squeeze_all", single_op("Squeeze", [1, 3, 1, 2], opset=11), -1, 1),
    ("unsqueeze_attr", single_op("Unsqueeze", [1, 3, 2], opset=11, axes=[1, -1]), -1, 1),
    ("unsqueeze_input", single_op("Unsqueeze", [1, 3, 2], [i64(2)]), -1, 1),
    ("concat_const", single_op("Concat", [1, 2, 3], [w(1, 2, 2)], axis=-1), -1, 1),
    ("concat_vars", chain([1, 2, 3], [node("Relu", ["x"], ["r"]), node("Concat", ["x", "r"], axis=1)]), -1, 1),
    ("slice_attr", single_op("Slice", [1, 4, 6], opset=9, starts=[1, -4], ends=[3, 100], axes=[1, 2]), -1, 1),
    ("slice_input_steps", single_op("Slice", [1, 4, 6], [i64(3, 0), i64(-100, 6), i64(1, 2), i64(-1, 2)]), -1, 1),
    ("slice_neg_step_mid", single_op("Slice", [1, 7], [i64(5), i64(1), i64(1), i64(-2)]), -1, 1),
    ("split_attr", single_op("Split", [1, 6, 2], opset=11, n_outputs=2, axis=1, split=[2, 4]), -1, 1),
    ("split_input", single_op("Split", [1, 6, 2], [i64(1, 2, 3)], n_outputs=3, axis=1), -1, 1),
    ("split_equal", single_op("Split", [1, 2, 6], n_outputs=3, axis=-1), -1, 1),
    ("split18_num_outputs", single_op("Split", [1, 6], opset=18, n_outputs=2, axis=1, num_outputs=2), -1, 1),
    ("slice_vector_input", single_op("Slice", [7], [i64(6), i64(0), i64(0), i64(-2)]), -1, 1),
    ("softmax_vector_input", single_op("Softmax", [5]), -1, 1),
    ("pad_vector_input", single_op("Pad", [5], [i64(1, 2)]), -1, 1),
    ("transpose_matrix_input", single_op("Transpose", [2, 3], perm=[1, 0]), -1, 1),
    ("gemm_matrix_input", single_op("Gemm", [2, 3], [w(4, 3)], transB=1), -1, 1),
    ("reducesum_with_batch_axis", single_op("ReduceSum", [1, 3], [i64(0, 1)], keepdims=0), -1, 1),
    ("gather_scalar", single_op("Gather", [1, 4, 3], [np.int64(-1)], axis=1), -1, 1),
    ("gather_vector", single_op("Gather", [1, 4, 3], [i64(2, 0, 2)], axis=2), -1, 1),
    ("gather_batch_axis", single_op("Gather", [1, 4, 3], [np.int64(0)], axis=0), -1, 1),
    ("expand", single_op("Expand", [1, 3, 1], [i64(1, 3, 4)]), -1, 1),
    ("expand_rank_up", single_op("Expand", [1, 3], [i64(2, 1, 3)]), -1, 1),
    ("shape_reshape_chain", chain([1, 2, 3, 4], [
        node("Shape", ["x"], ["s"]), node("Gather", ["s", "i0"], ["b"], axis=0),
        node("Unsqueeze", ["b", "ax"], ["bu"]), node("Concat", ["bu", "m1"], ["t"], axis=0),
        node("Reshape", ["x", "t"])], {"i0": np.int64(0), "ax": i64(0), "m1": i64(-1)}), -1, 1),
    ("constant_nodes", chain([1, 4], [
        node("Constant", [], ["c"], value=helper.make_tensor("v", 1, [4], [1.0, 2.0, 3.0, 4.0])),
        node("Constant", [], ["k"], value_float=0.5),
        node("Mul", ["c", "k"], ["ck"]), node("Add", ["x", "ck"])]), -1, 1),
    ("constantofshape", chain([1, 2, 3], [
        node("Shape", ["x"], ["s"]),
        node("ConstantOfShape", ["s"], ["z"], value=helper.make_tensor("v", 1, [1], [0.25])),
        node("Sub", ["x", "z"])]), -1, 1),
    ("where_const_cond", chain([1, 4], [
        node("Where", ["cond", "x", "other"])], {"cond": np.array([True, False, True, False]), "other": w(4)}), -1, 1),
    ("equal_where", chain([1, 4], [node("Floor", ["x"], ["f"]), node("Equal", ["f", "zero"], ["e"]),
                                   node("Where", ["e", "x", "zero"])], {"zero": np.float32(0)}), -2, 2),
    ("cast_float", single_op("Cast", [1, 4], to=1), -2, 2),
    ("cast_int_roundtrip", chain([1, 4], [node("Cast", ["x"], ["i"], to=7), node("Cast", ["i"], ["y"], to=1)]), -3, 3),
    ("identity_dropout", chain([1, 4], [node("Identity", ["x"], ["a"]), node("Dropout", ["a"], ["d"]),
                                        node("Relu", ["d"])]), -1, 1),
    ("reducesum_input", single_op("ReduceSum", [1, 3, 4], [i64(-1)], keepdims=0), -1, 1),
    ("reducesum_all", single_op("ReduceSum", [1, 3, 4]), -1, 1),
    ("reducemean_attr", single_op("ReduceMean", [1, 3, 4], opset=11, axes=[1]), -1, 1),
    ("reducemean_input18", single_op("ReduceMean", [1, 3, 4], [i64(1, 2)], opset=18), -1, 1),
    ("resize_scales", single_op("Resize", [1, 2, 3, 3], [None, np.array([1, 1, 2, 2], np.float32)], mode="nearest"), -1, 1),
    ("resize_sizes_asym", single_op("Resize", [1, 1, 3, 4], [None, None, i64(1, 1, 6, 12)], mode="nearest",
                                    coordinate_transformation_mode="asymmetric", nearest_mode="floor"), -1, 1),
    ("resize_non_integer", single_op("Resize", [1, 1, 4, 4], [None, None, i64(1, 1, 6, 5)], mode="nearest"), -1, 1),
    ("resize10", single_op("Resize", [1, 1, 2, 3], [np.array([1, 1, 2, 2], np.float32)], opset=10, mode="nearest"), -1, 1),
    ("resize_align_corners", single_op("Resize", [1, 1, 3, 3], [None, None, i64(1, 1, 5, 7)], mode="nearest",
                                       coordinate_transformation_mode="align_corners"), -1, 1),
    ("resize_ceil_down", single_op("Resize", [1, 1, 4, 4], [None, np.array([1, 1, 0.5, 1.5], np.float32)],
                                   mode="nearest", nearest_mode="ceil"), -1, 1),
    ("upsample9", single_op("Upsample", [1, 1, 2, 3], [np.array([1, 1, 2, 3], np.float32)], opset=9), -1, 1),
    ("max_const", single_op("Max", [1, 5], [w(5)]), -1, 1),
    ("min_vars", chain([1, 5], [node("Sin", ["x"], ["s"]), node("Min", ["x", "s"])]), -2, 2),
    ("old_exporter_weights_as_inputs", make_model(
        [node("Sub", ["x", "avg"], ["s"]), node("Flatten", ["s"], ["f"]), node("MatMul", ["f", "W"], ["m"]),
         node("Add", ["m", "b"], ["a"]), node("Relu", ["a"])], [1, 1, 1, 5],
        {"avg": w(1, 1, 1, 5), "W": w(5, 7), "b": w(7)}, opset=8, weights_as_inputs=True), -1, 1),
    ("double_input", make_model([node("MatMul", ["x", "W"])], [1, 3], {"W": R.standard_normal((3, 2))},
                                dtype=np.float64), -1, 1),
]


@pytest.mark.parametrize("model,low,high", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(model, low, high):
    g = load_onnx(model)
    raw = load_onnx(model, normalise=False)
    rng = np.random.default_rng(1)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    xs = rng.uniform(low, high, (7, *shape)).astype(np.float32)
    ref = run_ort(model, xs).reshape(len(xs), -1).astype(np.float64)
    scale = max(1.0, float(np.abs(ref).max()))
    for graph in (g, raw):
        x = torch.from_numpy(xs).reshape(len(xs), -1)
        y32 = graph.forward(x).reshape(len(xs), -1).double().numpy()
        y64 = graph.forward(x.double()).reshape(len(xs), -1).numpy()
        assert y32.shape == ref.shape
        assert np.abs(y32 - ref).max() <= 1e-5 * scale
        assert np.abs(y64 - ref).max() <= 1e-5 * scale
    assert g.output_shape == tuple(ref.shape[1:]) or int(np.prod(g.output_shape)) == ref.shape[1]


def test_every_case_uses_only_ir_ops():
    from verify.graph.ops import OPS
    for name, model, *_ in CASES:
        g = load_onnx(model)
        assert g.op_types() <= set(OPS), name
        for n in g.nodes:
            for ax in ([n.attrs["axis"]] if "axis" in n.attrs else []) + list(n.attrs.get("axes") or []):
                assert ax >= 1, (name, n)


def test_normalised_forms():
    g = load_onnx(dict((c[0], c[1]) for c in CASES)["matmul_bias"])
    assert [n.op for n in g.nodes] == ["linear"] and len(g.nodes[0].inputs) == 3
    assert g.constants[g.nodes[0].inputs[1]].shape == (3, 6)  # (out, in)
    g = load_onnx(dict((c[0], c[1]) for c in CASES)["conv_bn"])
    assert [n.op for n in g.nodes] == ["conv"]
    g = load_onnx(dict((c[0], c[1]) for c in CASES)["shape_reshape_chain"])
    assert [n.op for n in g.nodes] == ["reshape"] and g.nodes[0].attrs["shape"] == [24]
    g = load_onnx(dict((c[0], c[1]) for c in CASES)["identity_dropout"])
    assert [n.op for n in g.nodes] == ["relu"]
    g = load_onnx(dict((c[0], c[1]) for c in CASES)["old_exporter_weights_as_inputs"])
    assert g.input_shape == (1, 1, 5) and g.input_name == "x"
    assert all(t.dtype in (torch.float64, torch.int64, torch.bool) for t in g.constants.values())


# ------------------------------------------------------------------------------------ bad inputs
def test_missing_file(tmp_path):
    p = tmp_path / "nope.onnx"
    with pytest.raises(InputError, match="nope.onnx"):
        load_onnx(p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07garbage\xff\xfe" * 13)
    with pytest.raises(InputError, match="bad.onnx"):
        load_onnx(p)
    p.write_bytes(b"")
    with pytest.raises(InputError, match="bad.onnx"):
        load_onnx(p)


def test_unsupported_op_names_op_and_node(tmp_path):
    import onnx
    m = chain([1, 4], [node("Relu", ["x"], ["r"]), helper.make_node("Hardmax", ["r"], ["y"], name="hm")])
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    with pytest.raises(UnsupportedOpError, match="Hardmax") as e:
        load_onnx(p)
    assert e.value.op == "Hardmax" and e.value.node == "hm" and "m.onnx" in str(e.value)


def test_unsupported_op_on_a_dead_branch_is_ignored():
    m = chain([1, 4], [node("Relu", ["x"], ["r"]), node("Hardmax", ["r"], ["dead"]), node("Neg", ["r"])])
    g = load_onnx(m)
    assert [n.op for n in g.nodes] == ["relu", "neg"]


@pytest.mark.parametrize("model", [
    single_op("Concat", [1, 3], [w(1, 3)], axis=0),
    single_op("Transpose", [1, 2, 3], perm=[2, 1, 0]),
    single_op("Softmax", [1, 4], axis=0),
    single_op("Add", [1, 3], [w(2, 3)]),
    single_op("Resize", [1, 1, 3, 3], [None, np.array([1, 1, 2, 2], np.float32)], mode="linear"),
    single_op("Pad", [1, 2, 3], [i64(1, 0, 0, 0, 0, 0)]),
    single_op("Pad", [1, 2, 3], [i64(0, 1, 0, 0, 0, 0)], mode="reflect"),
    single_op("Slice", [1, 2, 3], [i64(1), i64(2), i64(0)]),
    chain([1, 4], [node("Gather", ["c", "x"])], {"c": w(3)}),
    single_op("Dropout", [1, 4], [np.float32(0.5), np.array(True)]),
    single_op("Conv", [1, 1, 4, 4], [w(1, 1, 2, 2)], auto_pad="BOGUS"),
    single_op("Resize", [1, 1, 3, 3], [None, np.array([1, 1, 2, 2], np.float32)], mode="nearest",
              coordinate_transformation_mode="tf_crop_and_resize"),
], ids=["concat_axis0", "transpose_batch", "softmax_batch", "bcast_batch", "resize_linear", "pad_batch",
        "pad_reflect_channel", "slice_batch", "gather_variable_indices", "dropout_training", "conv_bad_auto_pad",
        "resize_tf_crop"])
def test_batch_axis_and_attribute_forms_rejected(model):
    name = model.graph.node[0].op_type
    with pytest.raises(UnsupportedOpError, match=name):
        load_onnx(model)


def test_malformed_node_is_an_input_error():
    m = chain([1, 1, 4, 4], [node("MaxPool", ["x"])])  # kernel_shape is required
    with pytest.raises(UnsupportedOpError, match="MaxPool.*kernel_shape"):
        load_onnx(m)


def test_two_inputs_rejected():
    m = make_model([node("Add", ["x", "z"])], [1, 3])
    m.graph.input.append(helper.make_tensor_value_info("z", 1, [1, 3]))
    with pytest.raises(InputError, match="one network input"):
        load_onnx(m)


# ------------------------------------------------------------------------ broadcasting, randomised
def _random_broadcast_case(rng):
    """A variable of ONNX shape (1, *dims) and a constant whose shape broadcasts against it."""
    dims = [int(d) for d in rng.integers(1, 4, size=rng.integers(1, 4))]
    full = [1] + dims
    crank = int(rng.integers(0, len(full) + 2))
    cshape = []
    for k in range(crank):
        j = len(full) - crank + k
        if j < 0:  # leading axes beyond the variable's rank
            cshape.append(int(rng.choice([1, 1, 2])))
        else:
            cshape.append(int(rng.choice([1, full[j], 2 if full[j] == 1 else full[j]])))
    return full, cshape


@pytest.mark.parametrize("seed", range(32))
def test_broadcasting_matches_onnxruntime_or_is_rejected(seed):
    rng = np.random.default_rng(seed)
    shape, cshape = _random_broadcast_case(rng)
    op = ["Add", "Sub", "Mul", "Div", "Max"][seed % 5]
    c = rng.uniform(0.5, 1.5, cshape).astype(np.float32)
    order = ["x", "c"] if seed % 2 else ["c", "x"]
    m = chain(shape, [node("Tanh", ["x"], ["t"]), node(op, [n if n == "c" else "t" for n in order])], {"c": c})
    out_shape = np.broadcast_shapes(tuple(shape), tuple(cshape))
    lead = len(out_shape) - len(shape)  # axes in front of the batch axis
    if any(d != 1 for d in out_shape[:lead + 1]):  # the batch axis would be broadcast or moved
        with pytest.raises(UnsupportedOpError):
            load_onnx(m)
        return
    g = load_onnx(m)
    xs = rng.uniform(-1, 1, (3, *shape)).astype(np.float32)
    ref = run_ort(m, xs).reshape(3, -1)
    y = g.forward_flat(torch.from_numpy(xs).reshape(3, -1)).numpy()
    assert y.shape == ref.shape and np.abs(y - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


# ------------------------------------------------------------------------------ load_model dispatch
def test_load_model_dispatch(tmp_path):
    import onnx
    from verify.importers import load_model
    m = single_op("Relu", [1, 3])
    p = tmp_path / "r.onnx"
    onnx.save(m, p)
    for arg in (p, str(p), m):
        g = load_model(arg)
        assert g.op_types() == {"relu"} and g.input_shape == (3,)
    assert load_model(g) is g
    with pytest.raises(InputError, match="r.txt"):
        load_model(tmp_path / "r.txt")
    with pytest.raises(InputError, match="int"):
        load_model(3)
