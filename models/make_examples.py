"""Build the shipped examples: `models/*.onnx` and `specs/*.vnnlib`.

Everything here is made by this script (deterministic, CPU, a few seconds):
* `digits_mlp.onnx`: a 64-32-32-10 ReLU MLP trained on scikit-learn's 8x8 digits (bundled with
  scikit-learn, so no download), inputs in [0, 1].
* `digits_sigmoid.onnx`: the same architecture with sigmoid activations.
* `specs/digits_<i>_eps_<e>.vnnlib`: L∞ robustness around digits test image i (clipped to [0, 1]);
  small radii are provably robust (unsat), large ones have adversarial examples (sat).
* `toy_acas_like.onnx` + `specs/toy_box.vnnlib`: a 5-input ReLU net and an output-threshold property,
  the shape of an ACAS Xu query (input splitting).

Run: python models/make_examples.py
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from verify.datasets import load_digits
from verify.export import export_onnx
from verify.spec.robustness import robustness_spec

HERE = Path(__file__).resolve().parent
SPECS = HERE.parent / "specs"


def train_digits(act: type[nn.Module], seed: int = 0, epochs: int = 60) -> nn.Module:
    torch.manual_seed(seed)
    x, y = load_digits("train")
    x = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)
    y = torch.as_tensor(y, dtype=torch.long)
    model = nn.Sequential(nn.Linear(64, 32), act(), nn.Linear(32, 32), act(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module) -> float:
    x, y = load_digits("test")
    with torch.no_grad():
        pred = model(torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)).argmax(1).numpy()
    return float((pred == y).mean())


def main() -> None:
    SPECS.mkdir(exist_ok=True)
    for name, act in [("digits_mlp", nn.ReLU), ("digits_sigmoid", nn.Sigmoid)]:
        model = train_digits(act)
        export_onnx(model, HERE / f"{name}.onnx", (64,))
        print(f"{name}.onnx  test accuracy {accuracy(model):.3f}")
    xt, yt = load_digits("test")
    for i in (0, 1, 2):
        for eps in (0.01, 0.1):
            text = robustness_spec(xt[i].reshape(-1), int(yt[i]), eps, 10,
                                   comment=f"digits test image {i} (scikit-learn 8x8 digits), made by models/make_examples.py")
            (SPECS / f"digits_{i}_eps_{eps}.vnnlib").write_text(text)
    torch.manual_seed(1)
    toy = nn.Sequential(nn.Linear(5, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 2)).eval()
    export_onnx(toy, HERE / "toy_acas_like.onnx", (5,))
    with torch.no_grad():
        ys = toy(torch.rand(100_000, 5) * 2 - 1)
    thr = float(ys[:, 0].max()) + 0.5  # above every sampled output: expected to verify
    lines = [f"(declare-const X_{i} Real)" for i in range(5)] + [f"(declare-const Y_{j} Real)" for j in range(2)]
    lines += [f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))" for i in range(5)]
    lines.append(f"(assert (>= Y_0 {thr!r}))")
    (SPECS / "toy_box.vnnlib").write_text("; toy 5-input property made by models/make_examples.py\n"
                                         "; unsafe if output 0 reaches the threshold\n" + "\n".join(lines) + "\n")
    print("wrote", sorted(p.name for p in SPECS.glob("*.vnnlib")))


if __name__ == "__main__":
    main()
