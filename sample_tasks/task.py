"""A sample CloudAI task: a pretend training run that reports progress.

Parameters come from the environment:
  STEPS     number of steps to run (1-1000, default 5); with DATA_DIR, the most
            input values to process (default: all of them)
  DELAY     seconds per step (0-60, default 0.2)
  DATA_DIR  a directory (a mounted volume, e.g. /data) to read the input from
            and write the result to; unset: no input, no result file

Without DATA_DIR it prints one progress line per step, a final summary, and
exits 0.

With DATA_DIR it reads $DATA_DIR/input.txt: numbers (integers or decimals)
separated by spaces or newlines, `#` starting a comment; 1-1000 of them. Each
number is one step. At the end it writes $DATA_DIR/result.json, atomically (a
temporary file in the same directory, then a rename), with what it computed:

  {"count": 3, "input": "input.txt", "max": 4, "mean": 3.0, "min": 2, "sum": 9}

one line, sorted keys, no timestamp: the same input always gives the same file,
whichever attempt wrote it.

Bad input (a non-number, out of range, a missing or empty input file) prints a
clear error and exits 2, so the task ends `failed` with exit code 2. A result
that cannot be written (a read-only mount, a volume owned by another user)
prints why and exits 1; that is checked before the first step. SIGTERM (a
cancel, `docker stop`) ends it at once with exit code 143, removing its
temporary file; as PID 1 in a container it would otherwise be ignored until
Docker's SIGKILL.
"""

import json
import math
import os
import signal
import sys
import tempfile
import time

INPUT = "input.txt"
RESULT = "result.json"
MAX_VALUES = 1000


class BadInput(Exception):
    """The task's input is wrong: exit code 2."""


class CannotWrite(Exception):
    """The result cannot be written: exit code 1."""


def parameter(name, default, low, high, kind):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadInput(f"error: {name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise BadInput(f"error: {name}={value} is out of range ({low}..{high})")
    return value


def number(word):
    """An int when the word is one, else a finite float."""
    try:
        return int(word)
    except ValueError:
        pass
    value = float(word)  # ValueError for a non-number
    if not math.isfinite(value):
        raise ValueError(word)
    return value


def tidy(value):
    """A float rounded to 6 places (0.1 + 0.2 prints 0.3), an int as it is."""
    return round(value, 6) if isinstance(value, float) else value


def read_input(path):
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise BadInput(
            f"error: {path} is missing: put the input there first "
            "(numbers separated by spaces or newlines)"
        ) from None
    except IsADirectoryError:
        raise BadInput(f"error: {path} is a directory, not the input file") from None
    except UnicodeDecodeError:
        raise BadInput(f"error: {path} is not UTF-8 text") from None
    except OSError as error:
        raise BadInput(f"error: cannot read {path}: {error.strerror}") from None
    values = []
    for line_number, line in enumerate(text.splitlines(), 1):
        for word in line.split("#", 1)[0].split():
            try:
                values.append(number(word))
            except ValueError:
                raise BadInput(f"error: {path} line {line_number}: {word!r} is not a number") from None
    if not values:
        raise BadInput(f"error: {path} has no numbers")
    if len(values) > MAX_VALUES:
        raise BadInput(f"error: {path} has {len(values)} numbers, more than {MAX_VALUES}")
    return values


def open_result(data_dir):
    """A temporary file beside the result, so that a run that cannot write
    fails before its first step, not after the last."""
    try:
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{RESULT}.", suffix=".tmp")
    except OSError as error:
        who = f"uid {os.getuid()}, gid {os.getgid()}"
        hint = {
            "Read-only file system": "mount it read-write (no :ro)",
            "Permission denied": "give the volume to that user first, e.g. "
            f"chown {os.getuid()}:{os.getgid()} {data_dir} as root in a first task",
        }.get(error.strerror, "")
        raise CannotWrite(
            f"error: cannot write the result in {data_dir} ({who}): {error.strerror}"
            + (f"; {hint}" if hint else "")
        ) from None
    return os.fdopen(fd, "w", encoding="utf-8"), temporary


def write_result(file, temporary, path, result):
    try:
        with file:
            file.write(json.dumps(result, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600
        os.replace(temporary, path)
    except OSError as error:
        raise CannotWrite(f"error: cannot write {path}: {error.strerror}") from None


def pretend_training():
    steps = parameter("STEPS", 5, 1, 1000, int)
    delay = parameter("DELAY", 0.2, 0, 60, float)
    print(f"starting: {steps} steps, {delay}s each", flush=True)
    loss = 1.0
    for step in range(1, steps + 1):
        time.sleep(delay)
        loss *= 0.7
        print(f"step {step}/{steps} loss={loss:.4f}", flush=True)
    print(f"done: final loss {loss:.4f}", flush=True)


def process(data_dir):
    steps = parameter("STEPS", None, 1, MAX_VALUES, int)
    delay = parameter("DELAY", 0.2, 0, 60, float)
    if not os.path.isdir(data_dir):
        raise BadInput(f"error: DATA_DIR={data_dir!r} is not a directory (mount a volume there)")
    source = os.path.join(data_dir, INPUT)
    values = read_input(source)[:steps]
    file, temporary = open_result(data_dir)
    try:
        count = len(values)
        print(f"starting: {count} value{'' if count == 1 else 's'} from {source}, {delay}s each", flush=True)
        total = 0
        for step, value in enumerate(values, 1):
            time.sleep(delay)
            total += value
            print(f"step {step}/{count} value={value} sum={tidy(total)}", flush=True)
        result = {
            "count": count,
            "input": INPUT,
            "max": max(values),
            "mean": tidy(total / count),
            "min": min(values),
            "sum": tidy(total),
        }
        path = os.path.join(data_dir, RESULT)
        write_result(file, temporary, path, result)
    finally:
        file.close()
        if os.path.exists(temporary):
            os.unlink(temporary)
    print(f"done: sum {result['sum']}, mean {result['mean']}; wrote {path}", flush=True)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    data_dir = os.environ.get("DATA_DIR")
    if data_dir:
        process(data_dir)
    else:
        pretend_training()


if __name__ == "__main__":
    try:
        main()
    except BadInput as error:
        print(error, file=sys.stderr, flush=True)
        sys.exit(2)
    except CannotWrite as error:
        print(error, file=sys.stderr, flush=True)
        sys.exit(1)
