"""core.io.NpyRows: a .npy file filled row by row with pwrite, never through a mapping."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pipeline_lib.core.io import NpyRows


def test_rows_written_in_any_form_give_the_bytes_np_save_writes(tmp_path):
    expected = np.arange(5 * 2 * 3 * 4, dtype=np.float32).reshape(5, 2, 3, 4)
    with NpyRows(tmp_path / "rows.npy", expected.shape) as rows:
        rows[0:2] = expected[0:2]
        rows[2] = expected[2].astype(np.float64)  # converted to the file's dtype
        rows[3, 0] = expected[3, 0]
        rows[3, 1] = expected[3, 1]
        rows[slice(4, None)] = expected[4:]
    np.save(tmp_path / "reference.npy", expected)
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()


@pytest.mark.parametrize("index, values", [(0, np.zeros((3, 3))), (slice(0, 2), np.zeros((1, 2, 3))),
                                           ((1, 0), np.zeros(7)), (slice(0, 4, 2), np.zeros((2, 2, 3)))])
def test_a_value_count_that_does_not_fit_the_place_is_refused(tmp_path, index, values):
    with NpyRows(tmp_path / "rows.npy", (4, 2, 3)) as rows, pytest.raises(ValueError):
        rows[index] = values


def test_writing_a_large_file_keeps_the_process_resident_set_flat(tmp_path):
    """256 MB written row by row: the writer's resident set grows by far less than the file (a
    mapping written the same way would hold every page it wrote)."""
    script = textwrap.dedent(f"""
        import numpy as np
        from pipeline_lib.core.io import NpyRows

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

        row = np.ones((64, 1024), dtype=np.float32)          # 256 KB
        before = rss_mb()
        with NpyRows({str(tmp_path / 'big.npy')!r}, (1024, 64, 1024)) as rows:
            for i in range(1024):
                rows[i] = row
        print(rss_mb() - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    growth_mb = float(done.stdout.strip())
    assert growth_mb < 32, f"the writer's peak RSS grew by {growth_mb:.0f} MB for a 256 MB file"
    assert np.load(tmp_path / "big.npy", mmap_mode="r")[1023, 63, 1023] == 1.0
