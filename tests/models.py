"""Small ONNX models built in memory with `onnx.helper`, for importer and pass tests (and anyone else's).

`make_model` wraps a list of nodes into a one-input, one-output model; `single_op` builds a model around
one operator whose extra inputs are constants (initializers); `run_ort` runs a model with onnxruntime one
sample at a time so that the result is comparable with the IR forward on a batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

IR_VERSION = 8  # accepted by every onnxruntime we target, opsets up to 18; raised for newer opsets below


def make_model(nodes: Sequence[onnx.NodeProto], input_shape: Sequence[int],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 13,
               input_name: str = "x", output_name: str = "y", weights_as_inputs: bool = False,
               dtype=np.float32) -> onnx.ModelProto:
    """A model from `nodes` reading `input_name` and producing `output_name`.

    `weights_as_inputs` also lists the initializers under `graph.input`, as old exporters did (ACAS Xu)."""
    inits = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in (initializers or {}).items()]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [helper.make_tensor_value_info(input_name, elem, list(input_shape))]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    outputs = [onnx.ValueInfoProto(name=output_name)]  # type left to shape inference below
    graph = helper.make_graph(list(nodes), "test", inputs, outputs, inits)
    ir = IR_VERSION if opset <= 18 else 10
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # deliberately invalid test models keep the untyped output
        pass
    return model


def single_op(op_type: str, input_shape: Sequence[int], consts: Sequence[Any] = (), opset: int = 13,
              n_outputs: int = 1, **attrs) -> onnx.ModelProto:
    """One `op_type` node reading `x` then the constants in order (None = omitted optional input)."""
    inits, names = {}, ["x"]
    for i, c in enumerate(consts):
        if c is None:
            names.append("")
        else:
            inits[f"c{i}"] = np.asarray(c)
            names.append(f"c{i}")
    if n_outputs == 1:
        return make_model([helper.make_node(op_type, names, ["y"], **attrs)], input_shape, inits, opset)
    outs = [f"o{i}" for i in range(n_outputs)]
    nodes = [helper.make_node(op_type, names, outs, **attrs)]
    acc = outs[0]  # combine the outputs into one: o0 + 2*o1 + 3*o2 ... (after flattening)
    for i, o in enumerate(outs[1:], start=1):
        nodes += [helper.make_node("Flatten", [acc], [f"fa{i}"], axis=1),
                  helper.make_node("Flatten", [o], [f"fb{i}"], axis=1),
                  helper.make_node("Concat", [f"fa{i}", f"fb{i}"], ["y" if i == n_outputs - 1 else f"acc{i}"], axis=1)]
        acc = f"acc{i}"
    return make_model(nodes, input_shape, inits, opset)


def run_ort(model: onnx.ModelProto, xs: np.ndarray) -> np.ndarray:
    """Run `model` on each sample of `xs` (shape (N, *input_shape)); returns (N, *output_shape)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dt = np.float64 if inp.type == "tensor(double)" else np.float32
    return np.stack([sess.run(None, {inp.name: np.asarray(x, dtype=dt).reshape(shape)})[0] for x in xs])
