"""`PhaseClock` (pipeline/phases.py): what `weakly ingest --profile` prints."""

from __future__ import annotations

import threading
import time

from pipeline.phases import PhaseClock, phase_rows, process_age


def test_phases_add_up_and_threaded_ones_are_marked_overlapped():
    clock = PhaseClock()
    with clock.phase("main"):
        time.sleep(0.02)
    with clock.phase("main"):  # a phase entered twice accumulates
        time.sleep(0.02)

    def side():
        with clock.phase("side"):
            time.sleep(0.05)

    worker = threading.Thread(target=side)
    worker.start()
    worker.join()
    got = clock.as_dict()
    assert list(got) == ["main", "side"]
    assert got["main"]["wall"] >= 0.04 and "overlapped" not in got["main"]
    assert got["side"]["overlapped"] and got["side"]["wall"] >= 0.05
    assert got["main"]["cpu"] < got["main"]["wall"]  # sleeping is not CPU

    lines = phase_rows(got, total=1.0)
    side_line = next(line for line in lines if "side" in line)
    assert side_line.endswith("(overlapped)")
    other = next(line for line in lines if line.strip().startswith("other"))
    # overlapped phases are not subtracted from the job's total: `other` is 1 s - main
    assert abs(float(other.split()[1]) - (1.0 - got["main"]["wall"])) < 2e-3
    assert lines[-1].split()[-1] == "1.000"


def test_process_age_counts_from_this_process_start():
    first = process_age()
    assert first is not None and first > 0.0  # Linux: read from /proc
    time.sleep(0.05)
    assert process_age() - first >= 0.03  # clock ticks are 10 ms
