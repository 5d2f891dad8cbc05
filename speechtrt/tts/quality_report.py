"""``tts_quality.md``: the quality report as tables a reader checks at a glance (:mod:`speechtrt.tts.quality`)."""

from __future__ import annotations

from speechtrt.reporting import markdown_table


def _pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.1f} %"


def _num(x, spec: str = ".2f") -> str:
    if x is None:
        return "–"
    x = float(x)
    if x != x:
        return "–"
    return "identical" if x == float("inf") else format(x, spec)


def _asr_cells(asr: dict) -> list[str]:
    mos = asr.get("dnsmos") or {}
    return [_pct(asr.get("cer")), _pct(asr.get("wer")), _pct(asr.get("greedy_cer")), _pct(asr.get("greedy_wer")),
            _num(mos.get("p808_mos")), _num(mos.get("sig")), _num(mos.get("bak")), _num(mos.get("ovrl"))]


ASR_HEADER = ["CER (LM)", "WER (LM)", "CER (greedy)", "WER (greedy)", "DNSMOS P.808", "SIG", "BAK", "OVRL"]


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: the free-running voice, the ceilings, each gate."""
    lines = []
    v = report["voice"]
    if v.get("note"):
        lines.append(f"note: {v['note']}")
    fp32 = report["variants"]["torch-fp32"]["asr"]
    cer = fp32.get("cer", fp32["greedy_cer"])
    mos = fp32.get("dnsmos", {}).get("p808_mos")
    lines.append(f"{v['name']} torch-fp32 free-running: CER {_pct(cer)}, WER {_pct(fp32.get('wer', fp32['greedy_wer']))}"
                 + (f", DNSMOS P.808 {mos:.2f}" if mos is not None else ""))
    tf = report.get("teacher_forced") or {}
    if "asr" in tf:
        lines.append(f"teacher-forced: CER {_pct(tf['asr'].get('cer', tf['asr']['greedy_cer']))}")
    for key, c in report.get("ceiling", {}).items():
        if "asr" in c:
            lines.append(f"ceiling {key}: CER {_pct(c['asr'].get('cer', c['asr']['greedy_cer']))}")
    for g in report["gates"]:
        parts = [f"CER {g['cer']['points']:+.2f} points"]
        if "dnsmos_p808" in g:
            parts.append(f"DNSMOS {100 * g['dnsmos_p808']['rel_change']:+.1f} %")
        lines.append(f"gate {g['variant']} vs {g['reference']}: {', '.join(parts)} → {'met' if g['met'] else 'MISSED'}")
    t = report["targets"]["intelligibility_cer"]
    lines.append(f"target {t['target']}: {_pct(t['value'])} → "
                 + ("met" if t["met"] else f"missed by {t['missed_by_points']:.1f} points"))
    return lines


def _slower_than_fp32(variants: dict) -> list[str]:
    """The FP16/INT8 variants whose real-time factor is not below their backend's FP32 (else torch FP32)."""
    out = []
    for name, r in variants.items():
        backend, precision = name.rsplit("-", 1)
        ref_name = f"{backend}-fp32" if "rtf" in variants.get(f"{backend}-fp32", {}) else "torch-fp32"
        ref = variants.get(ref_name, {})
        if precision != "fp32" and "rtf" in r and "rtf" in ref and r["rtf"] >= ref["rtf"]:
            out.append(f"{name} RTF {r['rtf']:.3f} vs {ref_name} {ref['rtf']:.3f}")
    return out


def markdown(report: dict) -> str:
    v, s = report["voice"], report["sentences"]
    env = report.get("device", {})
    out = [f"# TTS quality: {v['name']}", ""]
    if v.get("note"):
        out += [f"> **Note:** {v['note']}.", ""]
    out += [f"{s['count']} held-out sentences ({s['split']}, {s['text_source']}, seed {s['seed']}); voice at "
            f"{v['sample_rate']} Hz, {'decoded to its stop token' if v['stop_token'] else 'fixed-length decoding'}. "
            f"Judge: {report['judge']['asr']}, decoders {', '.join(report['judge']['decoders'])}; "
            f"{report['judge']['dnsmos'] or 'DNSMOS not scored'}. Device: {env.get('name', '?')}. "
            f"Run time {report['seconds']} s.", ""]

    out += ["## Gates (FP16 and INT8 against FP32)", "",
            "DNSMOS P.808 within 5 % of FP32 and ASR CER within +1 point of FP32 (same backend's FP32 when it ran).", ""]
    rows = []
    for g in report["gates"]:
        mos = g.get("dnsmos_p808")
        rows.append([g["variant"], g["reference"],
                     "–" if mos is None else f"{mos['value']:.2f} vs {mos['fp32']:.2f} ({100 * mos['rel_change']:+.1f} %)",
                     "–" if mos is None else ("met" if mos["met"] else f"missed by {100 * mos['missed_by_rel']:.1f} %"),
                     f"{_pct(g['cer']['value'])} vs {_pct(g['cer']['fp32'])} ({g['cer']['points']:+.2f} pt, "
                     f"{g['cer']['decoder']})",
                     "met" if g["cer"]["met"] else f"missed by {g['cer']['missed_by_points']:.2f} pt",
                     "**met**" if g["met"] else "**missed**"])
    out += [markdown_table(["variant", "vs", "DNSMOS P.808", "≤ 5 %", "CER", "≤ +1 pt", "gate"], rows)
            if rows else "No FP16/INT8 variant ran.", ""]
    t = report["targets"]["intelligibility_cer"]
    out += [f"Intelligibility target, {t['target']}: {_pct(t['value'])} → "
            + ("**met**" if t["met"] else f"**missed** by {t['missed_by_points']:.1f} points"), ""]

    out += ["## Every backend × precision", ""]
    rows = []
    for name, r in report["variants"].items():
        if "skipped" in r:
            rows.append([name, *(["–"] * len(ASR_HEADER)), "–", "–", "–", "–", f"skipped: {r['skipped']}"])
            continue
        vs = r.get("vs_fp32", {})
        stop = vs.get("stop", {})
        rows.append([name, *_asr_cells(r["asr"]), _num(vs.get("mel_snr_db"), ".1f") if vs else "reference",
                     _num(vs.get("mcd_db")) if vs else "–", _pct(stop.get("same_length")) if vs else "–",
                     _pct(r["stop"]["stopped"]), f"RTF {r['rtf']:.3f}"])
    out += [markdown_table(["variant", *ASR_HEADER, "mel SNR dB vs FP32", "MCD dB vs FP32", "same stop length",
                            "stopped", "speed"], rows), ""]
    out += ["mel SNR over the decoder frames both runs decoded; MCD over 13 mel-cepstra (c0 out) of the audio's "
            "80-bin log-mel, no time warping; *same stop length*: sentences whose decoder frame count equals FP32's; "
            "*stopped*: sentences that ended on the stop token (not the frame cap); *speed*: real-time factor of "
            "speaking the sentences (graphs made on first use are not counted: `prepare_seconds` in the JSON).", ""]
    slower = _slower_than_fp32(report["variants"])
    if slower:
        out += ["Not faster than FP32 on this device (RTF; a lower precision is kept for its fidelity numbers, not "
                "its speed): " + "; ".join(slower) + ".", ""]

    out += ["## Teacher-forced vs free-running, and the ceilings", ""]
    rows = [["free-running (torch FP32)", *_asr_cells(report["free_running"]["asr"])]]
    tf = report.get("teacher_forced") or {}
    label = ("reference length (torch FP32; no feedback: teacher forcing does not apply)"
             if tf.get("feedback") is False else "teacher-forced (torch FP32)")
    rows.append([label, *(_asr_cells(tf["asr"]) if "asr" in tf else
                                                  [f"skipped: {tf.get('skipped', 'not run')}"] + ["–"] * 7)])
    for key, label in (("espeak_vocoder", "ceiling: espeak-ng → voice frames → vocoder"),
                       ("espeak_raw", "ceiling: espeak-ng audio itself")):
        c = report["ceiling"].get(key)
        if c:
            rows.append([label, *(_asr_cells(c["asr"]) if "asr" in c else [f"skipped: {c['skipped']}"] + ["–"] * 7)])
    out += [markdown_table(["audio", *ASR_HEADER], rows), ""]
    lengths = report["variants"]["torch-fp32"]["stop"].get("vs_reference_length")
    if lengths:
        out += [f"Free-running length against the espeak-ng reference: median ratio {lengths['median_ratio']:.2f}, "
                f"within 10 % for {_pct(lengths['within_10pct'])} of sentences.", ""]
    e = report["espeak_reference"]
    out += [f"espeak-ng reference: voice {e['voice']}, rate {e['rate']}, pitch {e['pitch']} (the voice's training "
            "settings).", ""]

    out += ["## Sentences", ""]
    rows = []
    heard = [k for k in (report["per_sentence"][0] if report["per_sentence"] else {}) if k.startswith("heard_")]
    for row in report["per_sentence"][:20]:
        rows.append([row["text"], str(row.get("frames_torch-fp32", "–")), str(row.get("reference_frames", "–")),
                     *(row[k] for k in heard[:2])])
    out += [markdown_table(["text", "frames (FP32)", "reference frames", *(k[6:] + " heard" for k in heard[:2])],
                           rows), ""]
    return "\n".join(out) + "\n"
