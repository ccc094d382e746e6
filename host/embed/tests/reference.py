# An independent float64 reference for the all-MiniLM-L6-v2 embeddings checked in
# minilm.rs (`matches_an_independent_reference`): the BERT forward pass in numpy,
# straight from model.safetensors, with the Python `tokenizers` package, then
# mean pooling and L2 normalisation as sentence-transformers does.
#
#   python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy tokenizers
#   /tmp/ref/bin/python host/embed/tests/reference.py MODEL_DIR
#
# MODEL_DIR holds model.safetensors, config.json and tokenizer.json (the store
# path printed by `sandpiper pull all-minilm-l6-v2`, without the file name).
import json, struct, numpy as np, sys
from math import erf
from tokenizers import Tokenizer
d = sys.argv[1].rstrip("/") + "/"
raw = open(d + "model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
W = {}
for k, v in hdr.items():
    if k == "__metadata__" or v["dtype"] != "F32": continue
    a, b = v["data_offsets"]
    W[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(v["shape"]).astype(np.float64)
p = "" if "embeddings.word_embeddings.weight" in W else "bert."
cfg = json.load(open(d + "config.json"))
tok = Tokenizer.from_file(d + "tokenizer.json")
tok.no_padding(); tok.enable_truncation(256)
def ln(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b
verf = np.vectorize(erf)
def gelu(x): return 0.5 * x * (1 + verf(x / np.sqrt(2)))
def embed(text):
    ids = tok.encode(text).ids
    L = len(ids)
    x = W[p+"embeddings.word_embeddings.weight"][ids] + W[p+"embeddings.position_embeddings.weight"][:L] + W[p+"embeddings.token_type_embeddings.weight"][0]
    x = ln(x, W[p+"embeddings.LayerNorm.weight"], W[p+"embeddings.LayerNorm.bias"])
    H = cfg["num_attention_heads"]; D = x.shape[1] // H
    for i in range(cfg["num_hidden_layers"]):
        q = f"{p}encoder.layer.{i}."
        lin = lambda y, n: y @ W[q+n+".weight"].T + W[q+n+".bias"]
        Q = lin(x, "attention.self.query").reshape(L, H, D).transpose(1, 0, 2)
        K = lin(x, "attention.self.key").reshape(L, H, D).transpose(1, 0, 2)
        V = lin(x, "attention.self.value").reshape(L, H, D).transpose(1, 0, 2)
        s = Q @ K.transpose(0, 2, 1) / np.sqrt(D)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        a = (s @ V).transpose(1, 0, 2).reshape(L, H * D)
        x = ln(lin(a, "attention.output.dense") + x, W[q+"attention.output.LayerNorm.weight"], W[q+"attention.output.LayerNorm.bias"])
        h = gelu(lin(x, "intermediate.dense"))
        x = ln(lin(h, "output.dense") + x, W[q+"output.LayerNorm.weight"], W[q+"output.LayerNorm.bias"])
    v = x.mean(0)
    return v / np.linalg.norm(v), L
for t in ["This is a test.", "A man is playing a guitar."]:
    v, L = embed(t)
    print(repr(t), L, [round(float(c), 7) for c in list(v[:4]) + list(v[-4:])], "sum", float(v.sum()))
