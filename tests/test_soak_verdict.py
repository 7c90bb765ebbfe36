"""The soak scenario's verdict (benchmarks/soak.py): RSS that keeps rising after the warm-up fails.
The soak itself runs with `make soak` (minutes per engine); this checks its judgement."""

from __future__ import annotations

from benchmarks.soak import rss_verdict

MIB = 2**20


def series(start: float, per_minute: float, minutes: float = 8, every: float = 5, noise: float = 0.0) -> list[tuple[float, int]]:
    out = []
    t = 0.0
    while t <= minutes * 60:
        wobble = noise if int(t / every) % 2 else -noise
        out.append((t, int((start + per_minute * t / 60 + wobble) * MIB)))
        t += every
    return out


def test_growth_after_the_warmup_fails_and_a_plateau_passes() -> None:
    # issue 19's builtin daemon: about 0.6 MiB a minute, still after five minutes
    growing = rss_verdict(series(48, 0.6), warmup_s=180, max_slope=0.25)
    assert not growing["ok"] and "keeps growing" in growing["reason"] and 0.55 < growing["slope_mib_per_min"] < 0.65
    # warm-up growth (caches, pools, arenas) followed by a noisy plateau
    warm = series(48, 4.0, minutes=3) + [(t + 185, rss) for t, rss in series(60, 0.0, minutes=5, noise=0.8)]
    verdict = rss_verdict(warm, warmup_s=180, max_slope=0.25)
    assert verdict["ok"], verdict
    assert verdict["rss_start_mib"] == 48 and 59 < verdict["rss_end_mib"] < 61


def test_too_few_samples_after_the_warmup_is_no_pass() -> None:
    verdict = rss_verdict(series(48, 0.0, minutes=3.2), warmup_s=180, max_slope=0.25)
    assert not verdict["ok"] and "samples" in verdict["reason"]
