#!/usr/bin/env python3
"""Behaviour kept across a refactor: short seeded CPU runs of four examples, their metrics.jsonl
compared number for number with the ones recorded before (timings left out).

  bench/behaviour/check_behaviour.py --record   # writes bench/behaviour/reference/<job>.jsonl
  bench/behaviour/check_behaviour.py            # runs again and compares; exit 1 on a difference

Runs use 2 threads, a training subset and a short schedule (the flags in RUNS). The numbers depend
on the CPU's vector unit (LibTorch's AVX2 and AVX-512 kernels round differently), so on another
machine record the last commit's numbers first and compare with those:
  git stash; <build>; check_behaviour.py --record --reference /tmp/ref; git stash pop; <build>
  check_behaviour.py --reference /tmp/ref"""
import argparse, json, os, pathlib, re, subprocess, sys, tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "bench" / "behaviour" / "reference"
# job -> (train_limit, test_limit, extra sparq run flags)
RUNS = {
    "lenet_pdp": (4096, 1024, ["--epochs", "2"]),
    "lenet_wanda": (8192, 1024, ["--epochs", "5"]),
    "mlp_hgq": (4096, 1024, ["--epochs", "2"]),
    "lenet_fashion_mnist_8bit": (4096, 1024, ["--epochs", "2"]),
}
TIMINGS = {"seconds", "samples_per_second"}


def limited_job(name, train_limit, test_limit):
    text = (ROOT / "examples" / f"{name}.yaml").read_text()
    limits = f"train_limit: {train_limit}, test_limit: {test_limit}"
    text, n = re.subn(r"data: \{dataset: fashion_mnist\}", f"data: {{dataset: fashion_mnist, {limits}}}", text)
    if n == 0:
        text, n = re.subn(r"(\n  dataset: fashion_mnist\n)",
                          f"\\1  train_limit: {train_limit}\n  test_limit: {test_limit}\n", text)
    if n != 1:
        sys.exit(f"{name}: cannot find the data section to limit")
    return text


def run(sparq, name, workdir):
    train_limit, test_limit, flags = RUNS[name]
    job = workdir / f"{name}.yaml"
    job.write_text(limited_job(name, train_limit, test_limit))
    out = workdir / name
    env = dict(os.environ, OMP_NUM_THREADS="2")
    subprocess.run([sparq, "run", str(job), "--output", str(out), "--device", "cpu", *flags], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def differences(ref, new, path=""):
    if isinstance(ref, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(ref) | set(new)):
            if k not in ref or k not in new:
                out.append(f"{path}.{k}: only in {'reference' if k in ref else 'new run'}")
            else:
                out += differences(ref[k], new[k], f"{path}.{k}")
        return out
    if isinstance(ref, list) and isinstance(new, list):
        if len(ref) != len(new):
            return [f"{path}: {len(ref)} entries before, {len(new)} now"]
        return [d for i, (a, b) in enumerate(zip(ref, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if ref == new else [f"{path}: {ref!r} before, {new!r} now"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--sparq", default=str(ROOT / "build" / "sparq"))
    ap.add_argument("--reference", type=pathlib.Path, default=REFERENCE, help="folder of the recorded runs")
    ap.add_argument("jobs", nargs="*", default=list(RUNS))
    args = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.jobs:
            rows = strip(run(args.sparq, name, pathlib.Path(tmp)))
            ref_path = args.reference / f"{name}.jsonl"
            if args.record:
                args.reference.mkdir(parents=True, exist_ok=True)
                ref_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
                print(f"{name}: recorded {len(rows)} epochs")
                continue
            ref = [json.loads(line) for line in ref_path.read_text().splitlines()]
            diff = differences(ref, rows)
            failed |= bool(diff)
            print(f"{name}: {'same numbers' if not diff else f'{len(diff)} difference(s)'} over {len(rows)} epochs")
            for d in diff[:20]:
                print("   ", d)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
