"""A sample CloudAI task: a pretend training run that reports progress.

Parameters come from the environment:
  STEPS   number of steps to run (1-1000, default 5)
  DELAY   seconds per step (0-60, default 0.2)

It prints one progress line per step, a final summary, and exits 0. Bad input
(a non-number, or out of range) prints a clear error and exits 2, so the task
ends `failed` with exit code 2.
"""

import os
import sys
import time


def parameter(name, default, low, high, kind):
    raw = os.environ.get(name, str(default))
    try:
        value = kind(raw)
    except ValueError:
        sys.exit(f"error: {name}={raw!r} is not a number")
    if not low <= value <= high:
        sys.exit(f"error: {name}={value} is out of range ({low}..{high})")
    return value


def main():
    steps = parameter("STEPS", 5, 1, 1000, int)
    delay = parameter("DELAY", 0.2, 0, 60, float)
    print(f"starting: {steps} steps, {delay}s each", flush=True)
    loss = 1.0
    for step in range(1, steps + 1):
        time.sleep(delay)
        loss *= 0.7
        print(f"step {step}/{steps} loss={loss:.4f}", flush=True)
    print(f"done: final loss {loss:.4f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr, flush=True)
            sys.exit(2)
        raise
