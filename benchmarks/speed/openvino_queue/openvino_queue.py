"""OpenVINO bf16 fed through one queue of requests, against the default pipeline, on the 2000 test reviews
of predict_backends.py (the first 2000 of shuffle(seed=42) of test.parquet).

    python benchmarks/speed/openvino_queue/openvino_queue.py DATA MERGED_DIR ONNX_FP32_DIR

MERGED_DIR and ONNX_FP32_DIR: the merged model and fp32 export that predict_backends.py made (--work).
Every review goes into one AsyncInferQueue in requests of 8, longest first; the timed pass follows a
full warm-up pass over the same reviews (each input shape compiled once). Labels are compared with
the default pipeline's (torch fp32).
"""
import sys
import time, json, numpy as np, torch, openvino as ov
from datasets import load_dataset
from transformers import AutoTokenizer, pipeline
torch.set_num_threads(2)
ds = load_dataset("parquet", data_files={"test": sys.argv[1] + "/test.parquet"})["test"].shuffle(seed=42).select(range(2000))
texts, gold = list(ds["text"]), list(ds["label"])
tok = AutoTokenizer.from_pretrained(sys.argv[2])
pipe = pipeline("text-classification", model=sys.argv[2], truncation=True)
pipe(texts[:16]); t = time.perf_counter(); base = pipe(texts); r0 = len(texts)/(time.perf_counter()-t)
ref = [int(o["label"] == "POSITIVE") for o in base]
print("pipeline default", round(r0, 2), "accuracy", np.mean(np.array(ref) == np.array(gold)), flush=True)
core = ov.Core(); m = core.read_model(sys.argv[3] + "/model.onnx"); names = [i.get_any_name() for i in m.inputs]
cm = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT"})
n = cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
def run(bs=8):
    order = sorted(range(len(texts)), key=lambda i: -len(tok(texts[i])["input_ids"]))  # counted: part of the work
    out = [None]*len(texts)
    def done(request, idx):
        for i, p in zip(idx, request.get_output_tensor(0).data.argmax(-1).tolist()): out[i] = p
    q = ov.AsyncInferQueue(cm, n); q.set_callback(done)
    for s in range(0, len(order), bs):
        idx = order[s:s+bs]
        enc = tok([texts[i] for i in idx], truncation=True, max_length=512, padding=True, return_tensors="np")
        q.start_async({nm: enc[nm].astype(np.int64) for nm in names}, idx)
    q.wait_all(); return out
run()  # warm-up: every shape compiled once
t = time.perf_counter(); got = run(); r = len(texts)/(time.perf_counter()-t)
print(f"openvino bf16 throughput ({n} requests) bs8", round(r, 2), f"{r/r0:.2f}x", "agree", np.mean(np.array(got) == np.array(ref)), "accuracy", np.mean(np.array(got) == np.array(gold)), flush=True)
print(json.dumps({"openvino": ov.__version__}))
