"""``asr_eval.md``: the seed's model × dialect matrix (WER % with 95 % interval), then the details of the report."""

from __future__ import annotations

from speechtrt.reporting import commit_label


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _p(x) -> str:
    return "–" if x is None else f"{x:.3g}"


def _interval(entry: dict, key: str = "ci95") -> str:
    """``[lo, hi]`` in %, or ``n/a (1 speaker)`` where the report gives no interval."""
    ci = entry.get(key)
    if ci is None:
        return "n/a (1 speaker)"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _header(report: dict) -> list[str]:
    ds, device = report["dataset"], report["device"]
    return ["# ASR evaluation across dialects", "",
            f"Manifest `{ds['manifest']}`: {ds['evaluated']} utterances evaluated of {ds['rows']} "
            f"({ds['audio_seconds'] / 60:.1f} min audio, {ds['speakers']} speakers, {len(report['per_dialect'])} "
            f"dialects). Device: {device['summary']}. "
            f"Commit {commit_label(report['commit'])}.", ""]


def _decoder(dec: dict) -> list[str]:
    if dec.get("lm"):
        tuning, lm = dec["tuning"], dec["lm"]
        tuned = (f"tuned on `{tuning['manifest']}` ({tuning['utterances']} development utterances, dev WER "
                 f"{_pct(tuning['wer'])} %)" if "manifest" in tuning else tuning.get("note", ""))
        return [f"Decoder: **CTC beam search with a {lm['order']}-gram word model** ({lm['vocabulary']} words, "
                f"{lm['sentences']} sentences of {lm['source']}; test perplexity {lm['test_perplexity']:.0f}, test "
                f"OOV rate {_pct(dec['test_oov_rate'])} %), beam {dec['beam']}, α = {dec['alpha']}, β = "
                f"{dec['beta']} — {tuned}. Greedy best-path WER is shown beside it.", ""]
    lexicon = (f" (lexicon of {dec['lexicon_words']} words from {dec['lexicon_source']}; test OOV rate "
               f"{_pct(dec['test_oov_rate'])} %)" if dec.get("lexicon_words") else "")
    return [f"Decoder: **{dec['primary']}**{lexicon}.", ""]


def _wer_matrix(report: dict) -> list[str]:
    models, per_d = report["models"], report["per_dialect"]
    dialects = list(per_d)
    lines = ["WER/CER are corpus rates after one normaliser on both sides; intervals are 95 % speaker-bootstrap "
             "(none for a set with a single speaker).", "", "## WER (%) by dialect", "",
             "| Model / backend / precision | " + " | ".join(dialects)
             + " | Overall | CER | greedy WER | RTFx | decoder s | p95 ms | peak MB |",
             "|---" * (len(dialects) + 8) + "|"]
    for name, m in models.items():
        cells = [f"{_pct(per_d[d][name]['wer'])} {_interval(per_d[d][name])}" for d in dialects]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | **{_pct(m['wer'])}** {_interval(m)}"
                     f" | {_pct(m['cer'])} | {_pct(m['greedy_wer'])} | {m['rtfx']:.1f} | "
                     f"{m.get('decode_seconds', 0):.1f} | {m['latency_ms']['p95']:.1f} | {m['peak_memory_mb']:.0f} |")
    if report["skipped_variants"]:
        lines += ["", "Not run here: " + "; ".join(f"`{s['variant']}` ({s['reason']})"
                                                   for s in report["skipped_variants"])]
    return lines


def _errors(models: dict) -> list[str]:
    lines = ["", "## Errors", "", "| Variant | S | D | I | ref words | WER vs duration (Spearman ρ, p) |",
             "|---|---|---|---|---|---|"]
    for name, m in models.items():
        sp = m["wer_vs_duration"]
        rho = "–" if sp["rho"] is None else f"{sp['rho']:+.2f}, p={sp['p_value']:.3g}"
        lines.append(f"| {name} | {m['substitutions']} | {m['deletions']} | {m['insertions']} | {m['ref_words']} | "
                     f"{rho} |")
    if models:
        name, first = next(iter(models.items()))
        lines += ["", f"### Error rate ((S+D)/words, %) by word type — {name}", ""]
        for kind, table in first["breakdown"].items():
            lines.append(f"- **{kind}**: " + ", ".join(f"{k} {_pct(v['error_rate'])} (n={v['words']})"
                                                       for k, v in table.items()))
    return lines


def _significance(sig: dict) -> list[str]:
    lines = ["", "## Significance", "", sig["method"], "", "### Model vs model (paired, same utterances)", "",
             "| A | B | ΔWER (A−B) | 95 % CI | p (bootstrap) | p (Holm) | p (Wilcoxon) |",
             "|---|---|---|---|---|---|---|"]
    for r in sig["model_vs_model"]:
        lines.append(f"| {r['a']} | {r['b']} | {_pct(r['wer_difference'])} | {_interval(r)} | "
                     f"{r['p_bootstrap']:.3g} | {r['p_holm']:.3g} | {_p(r['p_wilcoxon'])} |")
    for name, rows in sig["dialect_vs_dialect"].items():
        lines += ["", f"### Dialect vs dialect — {name} (speakers resampled per dialect, Holm-corrected)", "",
                  "| A | B | ΔWER | 95 % CI | p (Holm) | significant |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['a']} | {r['b']} | {_pct(r['wer_difference'])} | {_interval(r)} "
                         f"| {r['p_holm']:.3g} | {'yes' if r['significant'] else 'no'} |")
    return lines


def _precision_impact(impact: dict, dialects: list[str]) -> list[str]:
    if not impact:
        return []
    lines = ["", "## Precision impact (ΔWER vs FP32 of the same model, paired)", "",
             "| Variant | baseline | " + " | ".join(dialects) + " | overall |", "|---" * (len(dialects) + 3) + "|"]
    for name, e in impact.items():
        cells = " | ".join(_pct(e["per_dialect"][d]["wer_difference"]) for d in dialects)
        lines.append(f"| {name} | {e['baseline']} | {cells} | {_pct(e['overall']['wer_difference'])} "
                     f"{_interval(e['overall'])} |")
    return lines


def _fidelity(report: dict) -> list[str]:
    fid = {name: m["fidelity"] for name, m in report["models"].items() if m.get("fidelity")}
    if not fid and not report.get("classifier"):
        return []
    lines = ["", "## Fidelity against torch FP32 of the same model", ""]
    lines += [f"- {name} classifier: {c['note']}." for name, c in report.get("classifier", {}).items()]
    if fid:
        lines += ["", "| Variant | max abs Δ log p | mean abs Δ log p | greedy transcripts identical |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {f['max_abs_logprob_diff']:.2g} | {f['mean_abs_logprob_diff']:.2g} | "
                  f"{100 * f['greedy_identical']:.0f} % |" for name, f in fid.items()]
        lines += ["", "Δ log p over the columns the decoders read (blank + alphabet), every frame of every utterance."]
    return lines


def _selection(sel: dict) -> list[str]:
    if not sel["per_dialect"]:
        return []
    lines = ["", "## Model selection", "", sel["rule"], "", "| Dialect | recommended | WER % | RTFx | most accurate |",
             "|---|---|---|---|---|"]
    lines += [f"| {d} | {s['recommended']} | {_pct(s['wer'])} | {s['rtfx']:.1f} | {s['best_wer_variant']} |"
              for d, s in sel["per_dialect"].items()]
    return lines


def _speed(sp: dict | None) -> list[str]:
    if not sp:
        return []
    features = (f" (reading and featurizing every utterance once: {sp['batched_features_seconds']:.2f} s)"
                if "batched_features_seconds" in sp else "")
    lines = ["", "## Batched vs the seed's per-utterance loop", "",
             f"{sp['model']} torch FP32 on the same {sp['utterances']} utterances, same run, {sp['threads']} "
             f"thread(s): model compute (forward + greedy decode): seed loop {sp['seed_loop_seconds']:.2f} s, batched "
             f"{sp['batched_seconds']:.2f} s → **{sp['speedup']:.1f}×**; end to end (audio reading, features, "
             f"compute, scoring): {sp['seed_loop_end_to_end_seconds']:.2f} s vs {sp['batched_end_to_end_seconds']:.2f}"
             f" s → **{sp['end_to_end_speedup']:.1f}×**{features}. Identical transcripts: "
             f"{100 * sp['identical_transcripts']:.0f} %. Batch-1 latency p50/p95: "
             f"{sp['batch1_latency_ms']['p50']:.1f}/{sp['batch1_latency_ms']['p95']:.1f} ms."]
    fv = sp.get("fastest_variant")
    if fv:
        lines += ["", f"Fastest batched variant of {sp['model']}: `{fv['variant']}`, {fv['batched_seconds']:.2f} s → "
                  f"**{fv['speedup']:.1f}×** the seed loop's compute (end to end "
                  f"**{fv['end_to_end_speedup']:.1f}×**), "
                  f"WER {_pct(fv['wer'])} % vs FP32 {_pct(fv['fp32_wer'])} %; greedy transcripts identical to FP32 "
                  f"for {100 * fv['greedy_transcripts_identical_to_fp32']:.0f} % of utterances."]
    return lines


def _reference_variants(names: list[str]) -> list[str]:
    """One variant per model for the wide tables: its torch FP32 run, else its first."""
    chosen: dict[str, str] = {}
    for name in names:
        model = name.split("/")[0]
        if model not in chosen or name.endswith("/torch/fp32"):
            chosen[model] = name
    return list(chosen.values())


def _cell(entry: dict | None) -> str:
    return "–" if entry is None else f"{_pct(entry['wer'])} {_interval(entry)}"


def _ratio_cell(entry: dict | None) -> str:
    if not entry or entry.get("ratio") is None:
        return "–"
    ci = entry.get("ci95")
    return f"{entry['ratio']:.2f}× " + (f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "(no interval)")


def _target_text(t: dict) -> str:
    if t["value"] is None:
        return f"{t['target']}: –"
    pct = t["unit"] == "WER"
    value, limit = (f"{_pct(t['value'])} %", f"{_pct(t['limit'])} %") if pct else (f"{t['value']:.2f}×",
                                                                                    f"{t['limit']:.1f}×")
    name = f"{t['target']} ({t['basis']})" if t.get("basis") else t["target"]
    if t["met"]:
        return f"{name} {value} ≤ {limit} ✓"
    by = f"{100 * t['missed_by']:.1f} points" if pct else f"{t['missed_by']:.2f}×"
    return f"{name} {value} > {limit}, missed by {by}"


def _generalization(gen: dict | None) -> list[str]:
    if not gen:
        return []
    lines = ["", "## Generalization: synthesizers, accents and voices never heard in training", "", gen["method"]]
    if gen.get("unknown_synthesizer_utterances"):
        lines += ["", f"{gen['unknown_synthesizer_utterances']} utterances name no synthesizer in the manifest and "
                      "are not grouped."]
    by_synth = gen["by_synthesizer"]
    if by_synth:
        synths = list(by_synth)
        names = list(next(iter(by_synth.values())))
        lines += ["", "### WER (%) by synthesizer", "", "| Variant | " + " | ".join(synths) + " |",
                  "|---" * (len(synths) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(_cell(by_synth[s][n]) for s in synths) + " |" for n in names]
    if gen["by_voice"]:
        refs = _reference_variants(list(next(iter(gen["by_voice"].values()))["variants"]))
        lines += ["", "### WER (%) by synthesizer and voice", "",
                  "| Synthesizer:voice | accent | utterances | " + " | ".join(refs) + " |",
                  "|---" * (len(refs) + 3) + "|"]
        for key, entry in gen["by_voice"].items():
            first = next(iter(entry["variants"].values()))
            lines.append(f"| {key} | {entry['accent']} | {first['utterances']} | "
                         + " | ".join(_cell(entry["variants"][n]) for n in refs) + " |")
    for model, block in gen["held_out"].items():
        lines += ["", f"### Held out from training — {model}", ""]
        if block.get("trained_on") is None:
            lines.append(block["note"] + ".")
            continue
        named = block["named"]
        lines.append(f"Trained on: {block['trained_on']['source']}. Held out here: synthesizers "
                     f"{', '.join(named['held_out_synthesizer']) or 'none'}; voices/accents of trained synthesizers "
                     f"{', '.join(named['held_out_voice']) or 'none'}. In training: "
                     f"{', '.join(named['in_training']) or 'none'}.")
        lines += ["", "| Variant | in training | of it: trained accents | held-out voices/accents | ratio | "
                      "held-out synthesizers | ratio | all held out | ratio |", "|---" * 9 + "|"]
        for name, v in block["variants"].items():
            lines.append(f"| {name} | {_cell(v['in_training'])} | {_cell(v.get('in_training_accents'))} | "
                         f"{_cell(v['held_out_voice'])} | "
                         f"{_ratio_cell(v['ratio']['held_out_voice'])} | {_cell(v['held_out_synthesizer'])} | "
                         f"{_ratio_cell(v['ratio']['held_out_synthesizer'])} | {_cell(v['held_out'])} | "
                         f"{_ratio_cell(v['ratio']['held_out'])} |")
        lines += ["", "Targets:"]
        lines += [f"- {name}: " + "; ".join(_target_text(t) for t in v["targets"])
                  for name, v in block["variants"].items() if name in _reference_variants(list(block["variants"]))]
    return lines


def _input_problems(ip: dict) -> list[str]:
    lines = ["", "## Input problems", "", f"{ip['skipped']} skipped, {ip['repaired']} repaired: "
             + (", ".join(f"{k} {v}" for k, v in ip["counts"].items()) or "none") + "."]
    lines += [f"- #{item['index']} `{item['audio_filepath'] or '(manifest line)'}`: {item['problem']} → "
              f"{item['action']} ({item['detail']})" for item in ip["items"][:50]]
    return lines


def markdown(report: dict) -> str:
    """The report as Markdown."""
    lines = [*_header(report), *_decoder(report["decoder"]), *_wer_matrix(report), *_errors(report["models"]),
             *_significance(report["significance"]),
             *_precision_impact(report["precision_impact"], list(report["per_dialect"])),
             *_fidelity(report), *_selection(report["selection"]), *_generalization(report.get("generalization")),
             *_speed(report["speed"]["seed_loop_vs_batched"]),
             *_input_problems(report["input_problems"])]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
