# HF transformers decode step time at the paper's configurations, on random fp16 weights of a Llama-2-7B shape (as
# ../shared/gpu/hf_baseline.py and hf_compiled.py, which gave issue 13's figures), for scripts/gpu-bench.sh.
# Step time at depth D: (time of generate(D-token prompt, G tokens) - time of generate(…, 1 token)) / (G - 1).
# Usage: python3 hf_bench.py OUT.json [SECONDS]   (configurations past the time budget are skipped, and say so)
import json, os, sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM

out_path = sys.argv[1]
budget = float(sys.argv[2]) if len(sys.argv) > 2 else 240
t_start = time.time()
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=32000, max_position_embeddings=16384)
rows = []
meta = {'torch': torch.__version__, 'device': torch.cuda.get_device_name(0)}
try:
    import transformers
    meta['transformers'] = transformers.__version__
except Exception:
    pass
print('hf_bench', meta, flush=True)

def save():
    with open(out_path, 'w') as f:
        json.dump({'meta': meta, 'rows': rows}, f, indent=1)


def measure(model, attn, bs, prompt, gen, **kw):
    ids = torch.randint(3, 32000, (bs, prompt), device='cuda')
    kw = dict(do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0, **kw)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=gen, min_new_tokens=gen, **kw)  # warm-up (and compile, for a static cache)
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t0 = time.time(); model.generate(ids, max_new_tokens=2, min_new_tokens=2, **kw); torch.cuda.synchronize(); t1 = time.time()
        model.generate(ids, max_new_tokens=gen, min_new_tokens=gen, **kw); torch.cuda.synchronize(); t2 = time.time()
    step = ((t2 - t1) - (t1 - t0)) / (gen - 2)
    row = {'impl': attn, 'batch': bs, 'depth': prompt, 'gen': gen, 'stepMs': 1000 * step, 'tokensPerSecond': bs / step,
           'prefillMs': 1000 * (t1 - t0), 'peakGiB': torch.cuda.max_memory_allocated() / 2**30}
    rows.append(row); save()
    print(json.dumps(row), flush=True)


# (implementation, batch, prompt depth, generated tokens timed), in order of importance: the compiled static cache (the
# PyTorch user's fast path) first, then eager (the paper's baseline) and sdpa at the paper's configurations.
PLAN = [('static+compile', 1, 32, 64), ('static+compile', 8, 512, 32)] + \
    [('eager', b, d, g) for b, d, g in [(1, 32, 64), (1, 512, 64), (1, 2048, 64), (1, 4096, 32), (8, 512, 32), (8, 4096, 16), (16, 512, 24), (32, 512, 16)]] + \
    [('sdpa', b, d, g) for b, d, g in [(1, 32, 64), (1, 2048, 64), (8, 512, 32), (8, 4096, 16), (32, 512, 16)]] + \
    [('static+compile', 1, 2048, 64)]

# HF_PLAN=quick: the few rows a short call has room for.
if os.environ.get('HF_PLAN') == 'quick':
    PLAN = [('eager', 1, 32, 64), ('eager', 1, 2048, 64), ('eager', 8, 512, 32), ('sdpa', 1, 32, 64), ('static+compile', 1, 32, 64)]

model, loaded = None, None
for attn, bs, prompt, gen in PLAN:
    if time.time() - t_start > budget:
        rows.append({'impl': attn, 'batch': bs, 'depth': prompt, 'gen': gen, 'skipped': f'time budget of {budget:.0f} s spent'}); save()
        continue
    if loaded != attn:
        del model
        torch.cuda.empty_cache()
        cfg._attn_implementation = 'sdpa' if attn == 'static+compile' else attn
        torch.set_default_dtype(torch.float16)
        with torch.device('cuda'):
            model = LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
        loaded = attn
    try:
        measure(model, attn, bs, prompt, gen, **({'cache_implementation': 'static'} if attn == 'static+compile' else {}))
    except torch.cuda.OutOfMemoryError:
        rows.append({'impl': attn, 'batch': bs, 'depth': prompt, 'gen': gen, 'error': 'CUDA out of memory'}); save()
        torch.cuda.empty_cache()
save()
