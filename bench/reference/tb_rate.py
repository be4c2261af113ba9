"""Env steps/s of a finished `icrl train` run from its TensorBoard events: training steps
between the first and the last `perf/update_seconds` event over their wall-time difference, so
the first rollout (warm-up) and the final evaluation are left out. Works for runs of any commit
that logs `perf/update_seconds` (all since November 2026). Usage: tb_rate.py RUN_DIR."""

import glob
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def rate(run):
    files = glob.glob(run + "/events.out.tfevents.*")
    if not files:
        sys.exit(f"{run}: no TensorBoard events file")
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0})
    ea.Reload()
    ev = ea.Scalars("perf/update_seconds")
    if len(ev) < 2:
        sys.exit(f"{run}: fewer than two updates logged; train for at least 3 rollouts")
    return (ev[-1].step - ev[0].step) / (ev[-1].wall_time - ev[0].wall_time)


if __name__ == "__main__":
    print(round(rate(sys.argv[1])))
