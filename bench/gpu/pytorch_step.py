"""The training step of sparq_bench written in plain PyTorch (Python): the GPU baseline.

Same models (jet_tagger 16-64-32-32-5, lenet conv8-BN-ReLU-pool/conv16-BN-ReLU-pool/fc64/fc10), Adam
1e-3, cross-entropy, one synchronisation per step. "fixed8" quantizes like sparq's 8-bit benchmark:
weights ap_fixed<8,2> (k=1,i=1,f=6), data ap_fixed<8,4> (k=1,i=3,f=4), ReLU inputs ap_ufixed<8,3>,
RND + SAT, straight-through rounding, saturation gradient. "hgq" (jet_tagger only) trains the
fractional bits: per weight for weights and biases, per input feature for the data, rounded
straight through, with sparq's loss terms beta·EBOPs + gamma·bits (beta 1e-5, gamma 1e-6).
--compile wraps the model in torch.compile.
    python3 bench/gpu/pytorch_step.py [--device cuda] [--steps 200] [--compile]
"""
import argparse, json, time
import torch
import torch.nn as nn
import torch.nn.functional as F


def quantize(x, k, i, f):
    hi, lo = 2.0 ** i - 2.0 ** -f, -k * 2.0 ** i
    c = torch.clamp(x, lo, hi)
    v = c * 2.0 ** f
    n = torch.floor(v + 0.5)
    return (n + (v - v.detach())) * 2.0 ** -f


def ste_round(t):
    return t + (torch.round(t) - t).detach()


def hgq_quantize(x, i, f):
    """Signed RND/SAT with trainable f (i fixed), as sparq's composed ops: gradients to x inside
    the range and to f (ln2·(c - q) and the bound's)."""
    fr = ste_round(f)
    step = torch.exp2(-fr)
    hi = 2.0 ** i - step
    c = torch.where(x > hi, hi, torch.clamp(x, min=-(2.0 ** i)))
    v = c * torch.exp2(fr)
    n = torch.floor(v.detach() + 0.5)
    return (n + (v - v.detach())) * step


class HLinear(nn.Linear):
    def __init__(self, a, b):
        super().__init__(a, b)
        self.fw = nn.Parameter(torch.full((b, a), 6.0))
        self.fb = nn.Parameter(torch.full((b,), 6.0))
        self.fx = nn.Parameter(torch.full((a,), 4.0))

    def forward(self, x):
        return F.linear(hgq_quantize(x, 3, self.fx), hgq_quantize(self.weight, 1, self.fw),
                        hgq_quantize(self.bias, 1, self.fb))

    def terms(self):
        bw, bx = 2 + ste_round(self.fw), 4 + ste_round(self.fx)
        ebops = (bw * bx).sum() + (2 + ste_round(self.fb)).mean() * self.out_features
        return 1e-5 * ebops + 1e-6 * (ste_round(self.fw).sum() + ste_round(self.fb).sum() + ste_round(self.fx).sum())


class QLinear(nn.Linear):
    def forward(self, x):
        return F.linear(quantize(x, 1, 3, 4), quantize(self.weight, 1, 1, 6), quantize(self.bias, 1, 1, 6))


class QConv(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(quantize(x, 1, 3, 4), quantize(self.weight, 1, 1, 6), quantize(self.bias, 1, 1, 6),
                        padding=1)


class QBN(nn.BatchNorm2d):
    def forward(self, x):
        return F.batch_norm(quantize(x, 1, 3, 4), self.running_mean, self.running_var,
                            quantize(self.weight, 1, 1, 6), quantize(self.bias, 1, 1, 6), self.training,
                            self.momentum, self.eps)


class QReLU(nn.Module):
    def forward(self, x):
        return quantize(x, 0, 3, 5)  # unsigned saturation = ReLU on the grid


class QPool(nn.AvgPool2d):
    def forward(self, x):
        return F.avg_pool2d(quantize(x, 1, 3, 4), 2)


def jet_tagger(q):
    if q == "hgq":
        return nn.Sequential(HLinear(16, 64), nn.ReLU(), HLinear(64, 32), nn.ReLU(), HLinear(32, 32), nn.ReLU(),
                             HLinear(32, 5))
    L, R = (QLinear, QReLU) if q else (nn.Linear, nn.ReLU)
    return nn.Sequential(L(16, 64), R(), L(64, 32), R(), L(32, 32), R(), L(32, 5))


def lenet(q):
    C, B, R, P, L = (QConv, QBN, QReLU, QPool, QLinear) if q else \
        ((lambda i, o: nn.Conv2d(i, o, 3, padding=1)), nn.BatchNorm2d, nn.ReLU, (lambda: nn.AvgPool2d(2)), nn.Linear)
    conv = (lambda i, o: C(i, o, 3)) if q else C
    pool = (lambda: P(2)) if q else P
    return nn.Sequential(conv(1, 8), B(8), R(), pool(), conv(8, 16), B(16), R(), pool(), nn.Flatten(),
                         L(784, 64), R(), L(64, 10))


def bench(name, model, shape, classes, batch, steps, device, compile_=False):
    torch.manual_seed(0)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    layers = [m for m in model.modules() if isinstance(m, HLinear)]
    forward = torch.compile(model) if compile_ else model
    n = max(batch * 4, 8192)
    x = torch.randn((n,) + shape, device=device)
    y = torch.randint(classes, (n,), device=device)
    def step(b):
        idx = torch.randint(n, (batch,), device=device)
        opt.zero_grad()
        loss = F.cross_entropy(forward(x[idx]), y[idx])
        for m in layers:
            loss = loss + m.terms()
        loss.backward()
        opt.step()
    for b in range(10):
        step(b)
    torch.cuda.synchronize() if device == "cuda" else None
    t0 = time.perf_counter()
    for b in range(steps):
        step(b)
        if device == "cuda":
            torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    print(json.dumps({"case": name + (" compiled" if compile_ else ""), "batch": batch, "ms_per_step": round(dt * 1e3, 4),
                      "samples_per_s": round(batch / dt)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    for q in (False, True, "hgq"):
        tag = "hgq" if q == "hgq" else "fixed8" if q else "float"
        for batch in (1024, 33200):
            bench(f"{tag}_jet_tagger", jet_tagger(q), (16,), 5, batch, a.steps, a.device, a.compile)
        if q != "hgq":
            bench(f"{tag}_lenet", lenet(q), (1, 28, 28), 10, 256, a.steps, a.device, a.compile)


if __name__ == "__main__":
    main()
