"""`make gpu-check` (realtime/gpu_check.py): its plan covers the GPU figures, steps obey the deadline,
a killed run keeps its results, and a real pipeline step's figures are read back — all on the CPU."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from realtime import gpu_check as G
from tests.helpers import ROOT


def test_the_cuda_plan_measures_every_figure_the_gpu_targets_name(tmp_path):
    steps = {s.name: s for s in G.plan(tmp_path, "cuda", tiny=False)}
    for precision in ("fp16", "bf16"):
        for mode in ("eager", "cuda-graphs", "compiled"):
            argv = steps[f"oneshot {precision} {mode}"].argv
            assert argv[argv.index("--batch") + 1] == "1,8,32,64" and argv[argv.index("--precision") + 1] == precision
    q = steps["stochastic Q=8 T=5"].argv
    assert q[q.index("--samples") + 1] == "8" and q[q.index("--steps") + 1] == "5"
    for mode in ("eager", "cuda-graphs"):  # full-length and fixed-length steps in one `bench backend` run
        q = steps[f"stochastic steps Q=8 T=5 {mode}"].argv
        assert q[:2] == ["bench", "backend"] and "--stochastic" in q and q[q.index("--samples") + 1] == "8"
        assert q[q.index("--steps") + 1] == "5" and ("--cuda-graphs" in q) == (mode == "cuda-graphs")
    assert "--no-cuda-graphs" in steps["pipeline 40p no render no cuda graphs"].argv
    for n in (1, 3, 40):
        assert steps[f"clip {n} people"].argv[steps[f"clip {n} people"].argv.index("--size") + 1] == "1280x720"
        assert (
            "--no-render" in steps[f"pipeline {n}p no render"].argv
            and "--no-render" not in steps[f"pipeline {n}p render"].argv
        )
    assert "stream" in steps["live 3p paced"].argv and "gpu tests" in steps
    names = list(steps)  # the cheap headline figures come before compile and the test run
    assert (
        names.index("oneshot fp16 eager")
        < names.index("pipeline 40p render")
        < names.index("oneshot fp16 compiled")
        < names.index("gpu tests")
    )


def test_a_step_is_skipped_at_the_deadline_and_killed_at_its_timeout(tmp_path):
    env, _ = G.prepared_env()
    late = G.Checker(tmp_path, deadline_s=5.0, env=env)
    assert late.run(G.Step("sleep", ["-c", "pass"], 60, module="")).status == "skipped"
    checker = G.Checker(tmp_path, deadline_s=60.0, env=env)
    t0 = time.monotonic()
    o = checker.run(G.Step("sleep", ["-c", "import time; time.sleep(60)"], 1.0, module=""))
    assert o.status == "timeout" and time.monotonic() - t0 < 20
    failed = checker.run(G.Step("fail", ["-c", "raise SystemExit('no GPU here')"], 30, module=""))
    assert failed.status == "failed" and failed.rc == 1 and "no GPU here" in failed.note


def test_a_real_pipeline_step_reports_its_figures(tmp_path):
    clip = tmp_path / "clip.mp4"
    G.write_plain_clip(clip, people=2, frames=3, size="96x64")
    j = tmp_path / "p.json"
    argv = [
        "bench",
        "pipeline",
        str(clip),
        "--boxes",
        str(clip.with_suffix(".npz")),
        "--random-weights",
        "--config",
        "mega_tiny",
        "--device",
        "cpu",
        "--no-render",
        "--json",
        str(j),
    ]
    env, _ = G.prepared_env()
    o = G.Checker(tmp_path, 300.0, env).run(G.Step("pipeline", argv, 240, j))
    assert o.status == "ok", o.output_tail
    assert o.figures["frames"] == 3 and o.figures["people"] == 6 and o.figures["fps"] > 0
    assert "fps" in G.headline(o.figures)


def test_sigterm_keeps_the_results_and_prints_the_summary(tmp_path):
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "realtime.gpu_check", "--tiny", "--device", "cpu", "--out", str(out), "--deadline", "600"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    results = out / G.RESULTS_NAME
    deadline = time.monotonic() + 120
    while not results.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the first step is running
    p.send_signal(signal.SIGTERM)
    output, _ = p.communicate(timeout=120)
    assert p.returncode == 130, output
    saved = json.loads(results.read_text())
    assert saved["versions"]["torch"] and saved["steps"], saved
    assert all(s["status"] == "skipped" for s in saved["steps"]) and len(saved["steps"]) == len(
        G.plan(out, "cpu", tiny=True)
    )
    assert output.rstrip().splitlines()[-1].startswith("results:") and "step " in output
