"""TTFT of the fact prompt with the top paper at 4 sentences (before) vs up to 1100 chars (after),
side by side in one process: one model, the variants taking turns (ABBA) on each question."""
import json, statistics, subprocess, sys, time
from pathlib import Path
import paperchat.rag.generate as g
from paperchat.eval.bench.harness import settings_for, load_average
from paperchat.eval.metrics import percentile
from paperchat.rag.chain import PaperChat, Token
from paperchat.rag.llm import make_chat_model

busy, count = int(sys.argv[1]), int(sys.argv[2])
hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
if hogs: time.sleep(20)
settings = settings_for(Path("/tmp/pc-index-bf16"), llm={"backend": "local"})
chat = PaperChat.open(settings, chat_models={"local": make_chat_model(settings.llm)})
qs = [json.loads(l)["question"] for l in open("/tmp/exp/tune_singles.jsonl")]
asked = [q for q in qs if not chat.search(q).abstained][: count + 1]
rows = []
for turn, q in enumerate(asked):
    order = [0, 1100] if turn % 2 == 0 else [1100, 0]
    for v in order:
        g.TOP_PAPER_CHARS = v
        t0, first = time.perf_counter(), None
        for ev in chat.stream(q, answerer="local"):
            if isinstance(ev, Token) and first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        rows.append({"v": v, "warm": turn == 0, "ttft": round((first or end) - t0, 2), "total": round(end - t0, 2), "load": load_average()})
        print(rows[-1], flush=True)
for h in hogs: h.kill()
out = {}
for v in (0, 1100):
    t = [r["ttft"] for r in rows if r["v"] == v and not r["warm"]]
    tot = [r["total"] for r in rows if r["v"] == v and not r["warm"]]
    out[v] = {"ttft_p50": round(statistics.median(t), 2), "ttft_p95": round(percentile(t, 95), 2), "total_p50": round(statistics.median(tot), 2), "n": len(t)}
ratios = [b["ttft"] / a["ttft"] for a, b in zip([r for r in rows if r["v"] == 0 and not r["warm"]], [r for r in rows if r["v"] == 1100 and not r["warm"]])]
out["ratio_after_over_before_median"] = round(statistics.median(ratios), 3)
out["busy"] = busy
print(json.dumps(out))
json.dump({"summary": out, "rows": rows}, open(f"/tmp/exp/ttft_busy{busy}.json", "w"), indent=1)
