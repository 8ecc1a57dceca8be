"""bench.json → BENCHMARKS.md and growth.png: every cell says whether it was measured or extrapolated."""

from __future__ import annotations

from pathlib import Path

from paperchat.eval.bench.arxiv import FLAT_RSS_RATIO
from paperchat.eval.bench.retrieval import TARGETS_P95_MS

TARGET_ABSTRACTS_PER_S = 30.0
SAME_ANSWERS_OVERLAP = 0.99  # a back-end "gives the same answers" at this top-10 overlap or more


def fmt(s: dict | None, unit: str = "") -> str:
    """'median (min-max)'.

    >>> fmt({'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}, ' ms')
    '2.0 ms (1.0-3.0, n=3)'
    """
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']}{unit} ({s['min']}-{s['max']}, n={s['n']})"


def variant_name(row: dict) -> str:
    """An embedding variant's name, with the precision the default ingest path ran in.

    >>> variant_name({"variant": "default ingest path, batch 32", "precision": "bf16"})
    'default ingest path, batch 32: bf16'
    """
    return f"{row['variant']}: {row['precision']}" if row.get("precision") else row["variant"]


def targets(results: dict) -> list[dict]:
    """The issue's target rows: figure, how it was obtained (measured / extrapolated / not measured), met."""
    out = []
    variants = [v for v in results.get("embedding", {}).get("variants", []) if "abstracts_per_s" in v]
    same = [v for v in variants if (v.get("overlap_at_10") or 0) >= SAME_ANSWERS_OVERLAP]
    if variants and same:  # the default's own row is in `same` once its answers are known
        base = variants[0]
        best = max(same, key=lambda v: v["abstracts_per_s"]["median"])
        out.append(
            {
                "target": f"embedding >= {TARGET_ABSTRACTS_PER_S:.0f} abstracts/s "
                f"(default: {variant_name(base)})",
                "figure": fmt(base["abstracts_per_s"]),
                "how": "measured",
                "load": base["load_average"],
                "met": base["abstracts_per_s"]["median"] >= TARGET_ABSTRACTS_PER_S,
            }
        )
        out.append(
            {
                "target": f"embedding >= {TARGET_ABSTRACTS_PER_S:.0f} abstracts/s, same answers "
                f"(overlap@10 >= {SAME_ANSWERS_OVERLAP}): fastest is {variant_name(best)}",
                "figure": f"{fmt(best['abstracts_per_s'])}; overlap@10 {best['overlap_at_10']}",
                "how": "measured",
                "load": best["load_average"],
                "met": best["abstracts_per_s"]["median"] >= TARGET_ABSTRACTS_PER_S,
            }
        )
    arxiv = results.get("arxiv") or {}
    if arxiv.get("sizes"):
        rows = arxiv["sizes"]
        rss = ", ".join(f"{r['peak_rss_mib']['median']:.0f}" for r in rows)
        sizes = ", ".join(f"{r['records']:,}" for r in rows)
        estimate = arxiv.get("snapshot_estimate", {})
        hours = (f"; all {estimate['papers']:,} papers ≈ {estimate['ingest_h']} h end to end at the bundled "
                 f"ingest's {estimate['ingest_papers_per_s']} papers/s" if "ingest_h" in estimate else "")
        out.append(
            {
                "target": "arXiv snapshot ingest streams with flat memory (peak RSS of the largest size "
                f"within {FLAT_RSS_RATIO}x the smallest's), resumable, ETA shown",
                "figure": f"peak RSS {rss} MiB reading {sizes} records; "
                f"{rows[-1]['records_per_s']['median']:,.0f} records/s{hours}",
                "how": "measured",
                "load": rows[-1]["load_average"],
                "met": arxiv["flat_memory"],
            }
        )
    retrieval = results.get("retrieval", {})
    predictions = {p["papers"]: p for p in retrieval.get("extrapolation", {}).get("predictions", [])}
    rows = {r["papers_requested"]: r for r in retrieval.get("sizes", [])}
    for size, target in TARGETS_P95_MS.items():
        name = f"question → judged sources p95 < {target:.0f} ms at {size:,} papers"
        row = rows.get(size)
        if row and row["status"] == "ok":
            out.append(
                {
                    "target": name,
                    "figure": fmt(row["latency_ms"]["p95"], " ms")
                    + (f"; code of {row['measured_with']}" if row.get("measured_with") else ""),
                    "how": "measured",
                    "load": row["load_average_query"],
                    "met": row["latency_ms"]["p95"]["median"] < target,
                }
            )
        elif size in predictions:
            p = predictions[size]
            out.append(
                {
                    "target": name,
                    "figure": f"{p['p95_ms']} ms (fit through {p['fit_from'][0]:,} and {p['fit_from'][1]:,})",
                    "how": "extrapolated",
                    "load": None,
                    "met": None,
                }
            )
        elif retrieval:
            out.append(
                {
                    "target": name,
                    "figure": (row or {}).get("reason", "size not requested"),
                    "how": "not measured",
                    "load": None,
                    "met": None,
                }
            )
    return out


def _load(value) -> str:
    return "" if not value else " / ".join(str(x) for x in value)


def write_markdown(results: dict, path: Path) -> None:
    m = results["machine"]
    lines = [
        "# paperchat benchmarks",
        "",
        f"Generated by `python -m paperchat.eval.bench {' '.join(results['argv'])}` on {m['date']}.",
        "",
        (
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
            f"GPU: {m.get('gpu') or 'none'}, "
            f"{m['os']}; Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
            f"sentence-transformers {m['sentence_transformers']}, chromadb {m['chromadb']}. "
            f"Load average (1/5/15 min) at start: {_load(m['load_average_at_start'])}; "
            "each figure below gives "
            "the load when it was taken (a shared machine: other jobs ran alongside, so figures are noisy)."
        ),
        "",
        f"Each figure: median (min-max, n = runs) over {results['runs']} runs unless noted.",
        "",
    ]
    if results.get("commands"):
        lines += [
            ("The figures below come from these runs "
             "(merged with `paperchat.eval.bench.embedding.merge_embedding`):"),
            "",
        ]
        lines += [f"- {what}: `{command}`" for what, command in results["commands"].items()] + [""]
    if results.get("merged_from_previous_run"):
        lines += [
            "Sections kept from an earlier run (`--merge`): "
            + ", ".join(results["merged_from_previous_run"])
            + ".",
            "",
        ]
    if results.get("targets"):
        lines += [
            "## Targets (issue 12)",
            "",
            "| target | figure | how | load | met |",
            "|---|---|---|---|---|",
        ]
        for t in results["targets"]:
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
            lines.append(f"| {t['target']} | {t['figure']} | {t['how']} | {_load(t['load'])} | {met} |")
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in results["notes"]], ""]
    lines += _ingest_lines(results.get("ingest"))
    for name in ("embedding", "answer"):
        if results.get(name, {}).get("status") == "not measured":
            lines += [f"## {name.capitalize()}", "", f"Not measured: {results[name]['reason']}", ""]
    lines += _embedding_lines(results.get("embedding"))
    lines += _gpu_lines(results.get("gpu_embedding"))
    lines += _arxiv_lines(results.get("arxiv"))
    lines += _retrieval_lines(results.get("retrieval"), results.get("plot"))
    lines += _answer_lines(results.get("answer"), results.get("llm"), results.get("startup"))
    if results.get("llm_under_load"):
        lines += _llm_lines(results["llm_under_load"], "Local LLM under load")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _gpu_lines(gpu: dict | None) -> list[str]:
    """The embedding step on a lent GPU machine (a run of its own; see its note)."""
    if not gpu:
        return []
    lines = [
        f"## Embedding step on a GPU ({gpu['device']})",
        "",
        ("| variant | batch | abstracts/s | chunks/s | query ms (p50) | cosine to CPU (mean / min) "
         "| overlap@10 vs CPU | peak GPU MiB |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in gpu["variants"]:
        if "error" in v:
            lines.append(f"| {v['name']} | {v['batch']} | failed: {v['error']} | | | | | |")
            continue
        seconds = ", ".join(f"{x:.2f}" for x in v["seconds"])
        lines.append(f"| {v['name']} | {v['batch']} | {v['abstracts_per_s']} ({seconds} s per run) | "
                     f"{v['chunks_per_s']} | {v['query_ms_p50']} | {v['cos_vs_cpu_same_weights_mean']} / "
                     f"{v['cos_vs_cpu_same_weights_min']} | {v['top10_overlap_vs_cpu_same_weights']} | "
                     f"{v['peak_gpu_mib']} |")
    return lines + ["", gpu["note"], ""]


def _arxiv_lines(arxiv: dict | None) -> list[str]:
    if not arxiv or not arxiv.get("sizes"):
        return []
    lines = [
        "## arXiv-scale ingest (reading, dry run)",
        "",
        "| records | file | seconds | records/s | peak RSS (MiB) | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in arxiv["sizes"]:
        lines.append(f"| {r['records']:,} | {r['file_mib']} MiB | {fmt(r['seconds'], ' s')} | "
                     f"{fmt(r['records_per_s'])} | {fmt(r['peak_rss_mib'])} | {_load(r['load_average'])} |")
    lines += ["", arxiv["note"] + "."]
    estimate = arxiv.get("snapshot_estimate")
    if estimate:
        parts = [f"reading {estimate['reading_min']} min"]
        if "embedding_h" in estimate:
            parts.append(f"the embedding step alone {estimate['embedding_h']} h at "
                         f"{estimate['embedding_abstracts_per_s']} abstracts/s")
        if "ingest_h" in estimate:
            parts.append(f"end to end {estimate['ingest_h']} h at the bundled ingest's "
                         f"{estimate['ingest_papers_per_s']} papers/s (model load included)")
        lines += ["", f"The whole snapshot ({estimate['papers']:,} papers) on this machine, estimated from "
                  "these rates: " + "; ".join(parts) + "."]
    return lines + [""]


def _ingest_lines(ingest: dict | None) -> list[str]:
    if not ingest:
        return []
    lines = ["## Ingest (bundled corpus, fresh index)", ""]
    if ingest.get("status") == "not measured":
        return lines + [f"Not measured: {ingest.get('reason')}", ""]
    return lines + [
        "| papers | chunks | seconds | papers/s | peak RSS (MiB) | index on disk | load after |",
        "|---|---|---|---|---|---|---|",
        (
            f"| {ingest['papers']} | {ingest['chunks']} | {fmt(ingest['seconds'], ' s')} | "
            f"{fmt(ingest['papers_per_second'])} | {fmt(ingest['peak_rss_mib'])} | "
            f"{ingest['disk_mib']} MiB | "
            f"{_load(ingest.get('load_average_after'))} |"
        ),
        "",
        ingest["note"] + ".",
        "",
    ]


def _embedding_lines(emb: dict | None) -> list[str]:
    if not emb or emb.get("status") == "not measured":
        return []
    lines = [
        f"## Embedding step alone ({emb['texts']} chunk texts of {emb['abstracts']} abstracts)",
        "",
        (
            "| variant | texts/s | abstracts/s | abstracts per CPU-s | cosine to torch fp32 (mean / min) "
            "| overlap@10 "
            "| identical top-10 | load |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in emb["variants"]:
        if "texts_per_s" not in v:
            lines.append(f"| {v['variant']} | not measured | | | | | | |")
            continue
        cosine = v.get("cosine_to_fp32") or {}
        lines.append(
            f"| {variant_name(v)} | {fmt(v['texts_per_s'])} | {fmt(v['abstracts_per_s'])} | "
            f"{fmt(v.get('abstracts_per_cpu_s'))} | "
            f"{cosine.get('mean', '')} / {cosine.get('min', '')} | {v.get('overlap_at_10')} | "
            f"{v.get('identical_top10_questions')}/{emb['questions']} | {_load(v['load_average'])} |"
        )
    lines += ["", emb["note"] + ".", ""]
    overlap = emb.get("chunk_overlap")
    if overlap:
        lines += [
            "Chunk overlap (sentences repeated between neighbouring chunks of one abstract):",
            "",
            (
                "| overlap | chunks | chunks/abstract | abstracts with > 1 chunk | tokens embedded "
                "| overlap@10 vs default |"
            ),
            "|---|---|---|---|---|---|",
        ]
        for row in overlap:
            lines.append(
                f"| {row['overlap_sentences']} | {row['chunks']} | {row['chunks_per_abstract']} | "
                f"{row['multi_chunk_abstracts']} | {row['tokens']} | "
                f"{row.get('overlap_at_10_vs_default', '(default)')} |"
            )
        lines.append("")
    return lines


def _retrieval_lines(retrieval: dict | None, plot: str | None) -> list[str]:
    if not retrieval:
        return []
    lines = [
        "## Retrieval growth (question → judged sources, no LLM)",
        "",
        retrieval["synthetic"],
        "",
        (
            "| papers | chunks | how | p50 ms | p95 ms | disk MiB | query RSS MiB | build papers/s | build s "
            "| build CPU-s | re-ingest 64 papers | load (build; query) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in retrieval["sizes"]:
        if row["status"] != "ok":
            continue
        lines.append(
            f"| {row['papers']:,} | {row['chunks']:,} | measured | {fmt(row['latency_ms']['p50'])} | "
            f"{fmt(row['latency_ms']['p95'])} | {row['disk_mib']} | {row['rss_mib']} | "
            f"{row['build_papers_per_s']} (nice {row.get('build_nice', 15)}) | {row['build_s']}"
            f"{' (' + row['built_at'] + ')' if row.get('built_at') else ''} | "
            f"{row.get('build_cpu_s', '')} | {row['update_64_papers_s']} s | "
            f"{_load(row['load_average_build'])}; {_load(row['load_average_query'])} |"
        )
    extrapolation = retrieval.get("extrapolation", {})
    for p in extrapolation.get("predictions", []):
        lines.append(
            f"| {p['papers']:,} | | extrapolated from {p['fit_from'][0]:,} and {p['fit_from'][1]:,} | "
            f"{p['p50_ms']} | {p['p95_ms']} | {p['disk_mib']} | {p['rss_mib']} | | {p['build_s']} | "
            f"{p['build_cpu_s']} | | |"
        )
    for row in retrieval["sizes"]:
        if row["status"] != "ok":
            lines.append(
                f"| {row['papers_requested']:,} | | not built: {row.get('reason', '')} | | | | | | | | | |"
            )
    if extrapolation.get("checks"):
        lines += [
            "",
            "Extrapolation checked against measured sizes (predicted → measured, ratio):",
            "",
            "| fit from | predicts | build s | build CPU-s | disk MiB | RSS MiB | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in extrapolation["checks"]:
            cells = [
                f"{c[k]['predicted']} → {c[k]['measured']} ({c[k]['ratio']})"
                for k in ("build_s", "build_cpu_s", "disk_mib", "rss_mib", "p50_ms", "p95_ms")
            ]
            lines.append(
                f"| {c['fit_from'][0]:,}, {c['fit_from'][1]:,} | {c['papers']:,} | "
                + " | ".join(cells)
                + " |"
            )
        lines += ["", extrapolation["note"] + "."]
    ok = [r for r in retrieval["sizes"] if r["status"] == "ok"]
    if ok:
        stages = list(ok[0]["stages_ms_p50"])
        lines += [
            "",
            "Per-stage p50 / p95 (ms, median over runs):",
            "",
            "| papers | " + " | ".join(stages) + " |",
            "|---|" + "---|" * len(stages),
        ]
        for row in ok:
            lines.append(
                f"| {row['papers']:,} | "
                + " | ".join(
                    f"{row['stages_ms_p50'][s]['median']} / {row['stages_ms_p95'][s]['median']}"
                    if s in row["stages_ms_p50"]
                    else ""
                    for s in stages
                )
                + " |"
            )
    lines += ["", retrieval["note"] + ".", ""]
    for row in ok:
        if row.get("profile_top"):
            lines += [
                (
                    f"Profile at {row['papers']:,} papers (pyinstrument, one pass over the questions; "
                    f"full text in {row['profile']}):"
                ),
                "",
                "```",
                *row["profile_top"],
                "```",
                "",
            ]
    if plot:
        lines += [f"![growth curve]({plot})", ""]
    return lines


def _answer_lines(answer: dict | None, llm: dict | None, startup: dict | None) -> list[str]:
    lines = []
    if answer and answer.get("status") != "not measured":
        lines += [
            f"## Answer latency (bundled corpus, {answer['questions']} questions)",
            "",
            f"Load: {_load(answer.get('load_average'))}.",
            "",
            "| step | p50 ms | p95 ms |",
            "|---|---|---|",
            (
                f"| question to sources (PaperChat.search) | {fmt(answer['sources_ms']['p50'])} | "
                f"{fmt(answer['sources_ms']['p95'])} |"
            ),
            (
                f"| extractive answer (ask) | {fmt(answer['extractive_answer_ms']['p50'])} | "
                f"{fmt(answer['extractive_answer_ms']['p95'])} |"
            ),
            "",
            answer["note"] + ".",
            "",
        ]
    if llm:
        lines += _llm_lines(llm, "Local LLM")
    if startup:
        lines += ["## Start-up", ""]
        lines += (
            [f"Not measured: {startup.get('reason')}", ""]
            if startup.get("status") != "ok"
            else [
                (
                    f"`serve` to HTTP 200: {fmt(startup['seconds'], ' s')} "
                    f"(load {_load(startup.get('load_average'))}). {startup['note']}."
                ),
                "",
            ]
        )
    return lines


def _llm_lines(llm: dict, heading: str) -> list[str]:
    lines = [f"## {heading}", ""]
    if llm.get("status") != "ok":
        lines += [f"Not measured: {llm.get('reason')}", ""]
    elif "variants" in llm:
        busy = llm.get("busy_processes") or 0
        lines += [
            f"{busy} busy-loop processes ran alongside." if busy else "No busy-loop processes alongside.",
            f"Default thread count on this machine: {llm['default_threads']}.",
            "",
            "| threads | model load | TTFT median (min-max, n) | TTFT p95 | stream pieces/s | load |",
            "|---|---|---|---|---|---|",
            *(
                f"| {label} | {v['model_load_s']} s | {fmt(v['ttft_s'], ' s')} | {v['ttft_p95_s']} s | "
                f"{fmt(v['pieces_per_s'])} | {_load(llm.get('load_average'))} |"
                for label, v in llm["variants"].items()
            ),
            "",
            llm["note"] + ".",
            "",
        ]
    else:  # a section kept from a run before thread counts were compared
        lines += [
            "| model load | TTFT | stream pieces/s | load |",
            "|---|---|---|---|",
            (
                f"| {llm['model_load_s']} s | {fmt(llm['ttft_s'], ' s')} | {fmt(llm['pieces_per_s'])} | "
                f"{_load(llm.get('load_average'))} |"
            ),
            "",
            llm["note"] + f"; over {len(llm['questions'])} ResNet-50 questions.",
            "",
        ]
    return lines


def plot_growth(retrieval: dict, path: Path) -> bool:
    """Latency, disk and RSS against papers: measured points solid, extrapolated ones dashed."""
    rows = [r for r in retrieval["sizes"] if r["status"] == "ok"]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predictions = retrieval.get("extrapolation", {}).get("predictions", [])
    x = [r["papers"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, style in (("p50", "o-"), ("p95", "s-")):
        med = [r["latency_ms"][key]["median"] for r in rows]
        low = [m - r["latency_ms"][key]["min"] for m, r in zip(med, rows)]
        high = [r["latency_ms"][key]["max"] - m for m, r in zip(med, rows)]
        line = left.errorbar(x, med, yerr=[low, high], fmt=style, capsize=3, label=f"{key} measured")
        if predictions:
            left.plot(
                [x[-1], *[p["papers"] for p in predictions]],
                [med[-1], *[p[f"{key}_ms"] for p in predictions]],
                linestyle="--",
                marker="x",
                color=line[0].get_color(),
                label=f"{key} extrapolated",
            )
    for size, target in TARGETS_P95_MS.items():
        left.plot([size], [target], marker="_", markersize=18, color="grey")
        left.annotate(f"target p95 {target:.0f} ms", (size, target), fontsize=7, va="bottom")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="papers (synthetic)",
        ylabel="PaperChat.search, ms",
        title="Question → judged sources",
    )
    left.legend(fontsize=7)
    for key, style, label in (("disk_mib", "o-", "index on disk"), ("rss_mib", "s-", "query process RSS")):
        line = right.plot(x, [r[key] for r in rows], style, label=label)
        if predictions:
            right.plot(
                [x[-1], *[p["papers"] for p in predictions]],
                [rows[-1][key], *[p[key] for p in predictions]],
                linestyle="--",
                marker="x",
                color=line[0].get_color(),
                label=f"{label}, extrapolated",
            )
    right.set(xscale="log", yscale="log", xlabel="papers (synthetic)", ylabel="MiB", title="Disk and memory")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
