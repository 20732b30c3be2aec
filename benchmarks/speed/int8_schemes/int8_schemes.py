"""int8 schemes for an ONNX fp32 export: every linear layer int8, with onnxruntime's reduce_range on
(7-bit weights) and off (8-bit), and after onnxruntime's transformer graph fusions; label agreement
with the fp32 export on N train-split reviews that neither training nor validation used (rows 3500..
of shuffle(seed=42)), and reviews/s at batch 1 and 8 (one intra-op thread).

    python benchmarks/speed/int8_schemes/int8_schemes.py N EXPORT_DIR DATA_DIR WORK_DIR

The figures in results.txt were measured while other training jobs ran on the same 2 cores: read
the agreements, not the speeds.
"""
import sys, time, json
import numpy as np
from pathlib import Path
from datasets import load_dataset
from onnxruntime.quantization import quantize_dynamic, QuantType
import onnxruntime as ort
from transformers import AutoTokenizer

N, EXPORT, DATA, WORK = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
fp32 = EXPORT / "model.onnx"
tok = AutoTokenizer.from_pretrained(str(EXPORT))
ds = load_dataset("parquet", data_files={"train": str(DATA / "train.parquet")})["train"].shuffle(seed=42)
texts = ds.select(range(3500, 3500 + N))["text"]
order = np.argsort([len(t) for t in texts])

def logits(path, batch=8, threads=2):
    so = ort.SessionOptions(); so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    out = np.zeros((N, 2), np.float32)
    t0 = time.perf_counter()
    for i in range(0, N, batch):
        idx = order[i:i + batch]
        enc = tok([texts[j] for j in idx], truncation=True, max_length=512, padding=True, return_tensors="np")
        out[idx] = s.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0]
    return out, time.perf_counter() - t0

ref, t_ref = logits(fp32)
print("fp32", round(N / t_ref, 2), "rev/s", flush=True)
variants = {}
for rr in (True, False):
    p = WORK / f"int8-rr{int(rr)}.onnx"
    if not p.exists():
        quantize_dynamic(fp32, p, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=rr, weight_type=QuantType.QInt8)
    variants[f"reduce_range={rr}"] = p
try:
    from onnxruntime.transformers.optimizer import optimize_model
    opt = WORK / "fp32-opt.onnx"
    if not opt.exists():
        m = optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384)
        m.save_model_to_file(str(opt))
    variants["fp32 fused"] = opt
    q = WORK / "int8-opt-rr0.onnx"
    if not q.exists():
        quantize_dynamic(opt, q, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=False, weight_type=QuantType.QInt8)
    variants["fused, reduce_range=False"] = q
except Exception as e:
    print("optimizer failed:", e)
for name, p in variants.items():
    for b in (1, 8):
        out, t = logits(p, batch=b)
        agree = float((out.argmax(-1) == ref.argmax(-1)).mean())
        print(name, "batch", b, round(N / t, 2), "rev/s", "agree", agree, "max diff", float(np.abs(out - ref).max()), flush=True)
