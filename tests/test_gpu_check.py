"""bench/gpu_check.py --dry_run: every stage's code runs on CPU with tiny shapes, so the GPU check cannot rot
between the machines lent to run it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes")
pytest.importorskip("peft")

from bench.gpu_check import FIELDS, STAGES

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_runs_every_stage_and_records_its_fields(tmp_path):
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry_run", "--out_dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)  # a loaded 2-core box: minutes
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["environment"]["device"] == "cpu"
    assert list(report["stages"]) == list(STAGES)
    for name, r in report["stages"].items():
        assert r["ok"], (name, r.get("error"), r.get("traceback"))
        assert r["seconds"] >= 0
        missing = [f for f in FIELDS[name] if f not in r]
        assert not missing, (name, missing)
    s = report["stages"]
    assert all(f["ok"] for f in s["hf_logits"]["families"].values()) and len(s["hf_logits"]["families"]) >= 10
    assert all(err <= 1e-4 for err in s["kv_cache"]["families"].values())
    assert all(m["loss_last"] < m["loss_first"] for m in s["qlora"]["modes"].values())
    assert s["engine"]["alone_equals_batched"] and s["engine"]["max_rows_seen"] == s["engine"]["prompts"]
    assert s["lora_speed"]["ours_tokens_per_s"] > 0 and s["lora_speed"]["hf_tokens_per_s"] > 0
    assert s["decode_speed"]["tokens"] > 0 and 0 < s["decode_speed"]["fraction_of_ceiling"]
    assert [level["clients"] for level in s["server"]["levels"]] == [1, 4]
    assert all(level["requests"] > 0 and level["errors"] == 0 for level in s["server"]["levels"])
    summary = (tmp_path / "gpu_check.md").read_text()
    assert all(f"| {name} | yes |" in summary for name in STAGES)


def test_a_failing_stage_does_not_stop_the_rest(tmp_path):
    """A stage that raises is recorded with its error, the next one still runs, and the exit status says so."""
    code = (
        "import sys; sys.argv[0] = 'bench/gpu_check.py'\n"
        "import bench.gpu_check as g\n"
        "def broken(run, r):\n"
        "    r['partial'] = 1\n"
        "    raise RuntimeError('CUDA error: out of memory')\n"
        "g.stage_kv_cache = broken\n"
        f"g.main(['--dry_run', '--stages', 'kv_cache,decode_speed', '--out_dir', {str(tmp_path)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    stages = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert stages["kv_cache"]["ok"] is False and "out of memory" in stages["kv_cache"]["error"]
    assert stages["kv_cache"]["partial"] == 1  # what it measured before failing is kept
    assert stages["decode_speed"]["ok"] is True
    assert "**no**" in (tmp_path / "gpu_check.md").read_text()


def test_unknown_stage_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry_run", "--stages", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --stages: unknown ['nope']; choose from {', '.join(STAGES)}"]
