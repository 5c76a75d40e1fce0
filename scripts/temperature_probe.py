#!/usr/bin/env python3
"""How much of a perplexity is the model's temperature on the text (a control for QAT rows).

Scales the final RMSNorm weight of a safetensors checkpoint by each factor A (so every logit is
multiplied by A: softmax temperature 1/A), runs `qforge ppl` on the copy and prints one Markdown
row per factor. A model whose perplexity falls with A < 1 is over-confident on that text; a
training pass on next-token loss can lower the perplexity by that effect alone, without coming
closer to the fp model (see README, quantization-aware training).

Usage: scripts/temperature_probe.py MODEL_DIR TEXT [--factors 1,0.96,0.92] [--max-windows N]
                                    [--qforge build/qforge] [--kld-base FP_MODEL_DIR]
Standard library only; the model folder is copied to a temporary folder (never changed).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def scale_tensor(path, name, factor):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    if name not in header:
        sys.exit(f"temperature_probe: {path} has no tensor {name}")
    entry = header[name]
    start, end = (8 + n + o for o in entry["data_offsets"])
    if entry["dtype"] == "F32":
        count = (end - start) // 4
        values = struct.unpack(f"<{count}f", data[start:end])
        data[start:end] = struct.pack(f"<{count}f", *(v * factor for v in values))
    elif entry["dtype"] == "BF16":
        count = (end - start) // 2
        out = []
        for h in struct.unpack(f"<{count}H", data[start:end]):
            (v,) = struct.unpack("<f", struct.pack("<I", h << 16))
            (u,) = struct.unpack("<I", struct.pack("<f", v * factor))
            out.append((u + 0x7FFF + ((u >> 16) & 1)) >> 16)  # round to nearest even
        data[start:end] = struct.pack(f"<{count}H", *out)
    else:
        sys.exit(f"temperature_probe: {name} is {entry['dtype']} (F32 or BF16 expected)")
    with open(path, "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--factors", default="1,0.96,0.92,0.88")
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--qforge", default="build/qforge")
    ap.add_argument("--kld-base", default="", help="also the mean KLD from this fp model")
    ap.add_argument("--norm", default="model.norm.weight")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.model, "model.safetensors")):
        sys.exit(f"temperature_probe: {a.model}/model.safetensors not found (one-file checkpoints)")
    print("| logit factor | PPL |" + (" mean KLD | top-1 |" if a.kld_base else ""))
    print("|---|---|" + ("---|---|" if a.kld_base else ""))
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "model")
        for factor in (float(x) for x in a.factors.split(",")):
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(a.model, copy)
            scale_tensor(os.path.join(copy, "model.safetensors"), a.norm, factor)
            common = ["--text", a.text, "--max-windows", str(a.max_windows), "--json", "-q"]
            ppl = json.loads(subprocess.run([a.qforge, "ppl", copy] + common, check=True,
                                            capture_output=True, text=True).stdout)["ppl"]
            row = f"| {factor:g} | {ppl:.3f} |"
            if a.kld_base:
                k = json.loads(subprocess.run([a.qforge, "kld", a.kld_base, copy] + common,
                                              check=True, capture_output=True, text=True).stdout)
                row += f" {k['kld_mean']:.5f} | {100 * k['top1_agreement']:.2f}% |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
