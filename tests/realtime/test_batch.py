"""Many videos across workers (realtime/batch.py, `mega-rt batch`): inputs, resumable exactly-once outputs,
the manifest, and a local Ray cluster with a worker killed mid-video. CPU, tiny random-weight MEGA, the
full-frame detector, short clips written here."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.realtime.test_multistream import write_clip

TINY = ["--random-weights", "--config", "mega_tiny", "--threads", "1", "--no-progress", "--detector", "full-frame"]
ROW_KEYS = ("frame", "track_id", "box_xyxy", "score", "tokens", "rotmat", "cam_crop", "cam_t", "verts")


def _kw(*extra) -> dict:
    """The option dict `mega-rt batch` hands to run_batch, as click parses it."""
    from realtime.cli.batch import batch

    params = batch.make_context("batch", ["x", "--out-dir", "o", *TINY, *extra]).params
    for k in ("inputs", "out_dir", "workers", "ray_address", "retries", "frame_batch", "no_render", "no_progress"):
        params.pop(k)
    return params


@pytest.fixture(scope="module")
def videos(tmp_path_factory, assets_dir):
    d = tmp_path_factory.mktemp("batch_in")
    return [write_clip(d / f"clip{i}.mp4", n) for i, n in enumerate((24, 28, 32, 36))]


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    """The four videos run in this process, one after another."""
    from realtime.batch import plan_jobs, run_batch

    out = tmp_path_factory.mktemp("batch_ref")
    jobs = plan_jobs(videos, out, overlay=True)
    report = run_batch(jobs, _kw(), out, workers=1, echo=lambda line: None)
    assert [r["status"] for r in report.done] == ["done"] * 4 and not report.failed
    return out, jobs


def _rows(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in (*ROW_KEYS, "num_frames")}


def test_inputs_from_files_folders_and_lists(videos, tmp_path):
    from realtime.batch import BatchError, expand_inputs, plan_jobs

    folder = videos[0].parent
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# the first two\n{videos[0]}\n{os.path.relpath(videos[1], tmp_path)}  # relative to the list\n\n"
    )
    got = expand_inputs([str(listing), str(folder), str(videos[3])], tmp_path / "out")
    assert got == [v.resolve() for v in videos]  # in order, each once
    with pytest.raises(BatchError, match="line 1: .*nope.mp4: no such file"):
        (tmp_path / "bad.txt").write_text("nope.mp4\n")
        expand_inputs([str(tmp_path / "bad.txt")], tmp_path / "out")
    with pytest.raises(BatchError, match="is the --out-dir"):
        expand_inputs([str(folder)], folder)
    (tmp_path / "other").mkdir()
    twin = write_clip(tmp_path / "other" / "clip0.mp4", 4)
    keys = [
        j.key for j in plan_jobs([videos[0].resolve(), twin.resolve(), videos[1].resolve()], tmp_path, overlay=False)
    ]
    assert keys[2] == "clip1" and keys[0].startswith("clip0-") and keys[1].startswith("clip0-") and keys[0] != keys[1]


def test_a_rerun_does_no_work_and_redoes_only_partial_outputs(reference, videos):
    from realtime.batch import MANIFEST, plan_jobs, run_batch, verify_outputs

    out, jobs = reference
    manifest = json.loads((out / MANIFEST).read_text())
    for job in jobs:
        entry = manifest["videos"][job.key]
        assert entry["status"] == "done" and entry["frames"] == int(_rows(job.results)["num_frames"])
        assert entry["settings"]["detector"] == "full-frame" and entry["weights"] == {}
        assert verify_outputs(job) is None
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    report = run_batch(plan_jobs(videos, out, overlay=True), _kw(), out, workers=1, echo=lambda line: None)
    assert not report.done and sorted(report.skipped) == sorted(j.key for j in jobs)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST} == {
        p: t for p, t in mtimes.items() if p.name != MANIFEST
    }

    # a results file cut short and an overlay that is gone: both redone, the other two left alone
    short = jobs[1]
    with np.load(short.results, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(short.results, **{**arrays, "num_frames": np.int32(3)})
    os.unlink(jobs[2].overlay)
    assert "3 of 28 frames" in verify_outputs(short) and verify_outputs(jobs[2]) == "no overlay video"
    lines: list[str] = []
    report = run_batch(plan_jobs(videos, out, overlay=True), _kw(), out, workers=1, echo=lines.append)
    assert sorted(r["key"] for r in report.done) == sorted([short.key, jobs[2].key])
    assert any(short.key in line and "redoing" in line for line in lines)
    assert all(verify_outputs(j) is None for j in jobs)

    # other settings: every video is redone
    report = run_batch(
        plan_jobs(videos, out, overlay=True), _kw("--max-people", "1"), out, workers=1, echo=lines.append
    )
    assert len(report.done) == 4 and "settings or weights changed" in lines[-1]


def test_ray_worker_killed_mid_video_is_retried_and_outputs_match(reference, videos, tmp_path):
    """A local Ray cluster (2 CPUs, no dashboard), 2 actors; one is killed (SIGKILL) while it writes a
    video: Ray restarts it and re-runs the video, every output verifies, the results arrays equal those of
    the single-process run, the dead attempt's temporaries are removed, and a second run does no work."""
    ray = pytest.importorskip("ray")
    from realtime.batch import MANIFEST, plan_jobs, run_batch, verify_outputs

    ref_out, ref_jobs = reference
    out = tmp_path / "ray_out"
    out.mkdir()
    jobs = plan_jobs(videos, out, overlay=False)
    killed: list[tuple[str, int]] = []
    done = threading.Event()

    def kill_one_writer():
        while not done.is_set() and not killed:
            for p in out.glob(".*.spill"):
                stem, pid = p.name[1:].rsplit(".", 2)[:2]
                if pid.isdigit() and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append((stem, int(pid)))
                    return
            time.sleep(0.01)

    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    try:
        watcher = threading.Thread(target=kill_one_writer, daemon=True)
        watcher.start()
        report = run_batch(jobs, _kw(), out, workers=2, ray_address="local", retries=2, echo=lambda line: None)
        done.set()
        watcher.join()
        assert killed, "no worker was caught writing"
        assert len(report.done) == 4 and not report.failed, report.table()
        manifest = json.loads((out / MANIFEST).read_text())["videos"]
        stem, pid = killed[0]
        victim = next(j for j in jobs if f"{j.key}_mega" == stem)
        assert manifest[victim.key]["worker_pid"] != pid  # redone by the restarted actor
        assert f".{stem}.{pid}.spill" in manifest[victim.key]["cleaned"]
        assert not list(out.glob(".*.spill")) and not list(out.glob(".*.partial*"))
        for job, ref in zip(jobs, ref_jobs):
            assert verify_outputs(job) is None
            got, want = _rows(job.results), _rows(ref.results)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{job.key} {k}")
        again = run_batch(jobs, _kw(), out, workers=2, ray_address="local", retries=2, echo=lambda line: None)
        assert not again.done and len(again.skipped) == 4
    finally:
        done.set()
        ray.shutdown()


def test_local_pool_worker_killed_mid_video_is_rerun_and_outputs_match(reference, videos, tmp_path):
    """Two spawned worker processes; one is killed while it writes: the pool breaks, a new one reruns
    the unfinished videos, and every result equals the single-process run's."""
    from realtime.batch import plan_jobs, run_batch, verify_outputs

    _, ref_jobs = reference
    out = tmp_path / "pool_out"
    out.mkdir()
    jobs = plan_jobs(videos[:2], out, overlay=False)
    killed: list[int] = []
    done = threading.Event()

    def kill_one_writer():
        while not done.is_set() and not killed:
            for p in out.glob(".*.spill"):
                pid = p.name[1:].rsplit(".", 2)[1]
                if pid.isdigit() and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_one_writer, daemon=True)
    watcher.start()
    try:
        report = run_batch(jobs, _kw(), out, workers=2, retries=2, echo=lambda line: None)
    finally:
        done.set()
        watcher.join()
    assert killed and len(report.done) == 2 and not report.failed, report.table()
    assert all(r["worker_pid"] not in killed for r in report.done)
    for job, ref in zip(jobs, ref_jobs):
        assert verify_outputs(job) is None
        got, want = _rows(job.results), _rows(ref.results)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{job.key} {k}")


def test_cli_batch_runs_and_reports_bad_input(videos, tmp_path):
    from click.testing import CliRunner

    from realtime.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", str(videos[0]), "--out-dir", str(out), "--no-render", *TINY])
    assert result.exit_code == 0, result.output
    assert "1 done, 0 already complete, 0 failed" in result.output
    result = CliRunner().invoke(main, ["batch", str(videos[0]), "--out-dir", str(out), "--no-render", *TINY])
    assert result.exit_code == 0 and "0 done, 1 already complete" in result.output, result.output
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "nope.mp4"), "--out-dir", str(out), *TINY])
    assert result.exit_code == 2 and "nope.mp4: no such file" in result.output and "Traceback" not in result.output
    (out / "manifest.json").write_text("{")
    result = CliRunner().invoke(main, ["batch", str(videos[0]), "--out-dir", str(out), "--no-render", *TINY])
    assert result.exit_code == 1 and "not a batch manifest" in result.output, result.output
