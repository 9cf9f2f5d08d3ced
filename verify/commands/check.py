"""`verify check MODEL SPEC` and `verify bench INSTANCES_CSV`: decide VNN-LIB properties.

Both share every verification option (`bench` applies them to each instance). Exit codes:
- check: 0 for any verdict (sat/unsat/unknown/timeout), 2 for bad input or usage, 1 for an internal error.
- bench: 0 when no answer is wrong; 1 when some answer contradicts expected.csv (sat where unsat is
  expected or unsat where sat is expected) or an instance hit an internal error; 2 when the instance list
  is unreadable or some instance had bad input (each such instance is recorded as `error`).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verify.errors import InputError
from verify.settings import METHODS, Settings

DEFAULT_CHECK_TIMEOUT = 60.0
RESULT_COLUMNS = ["onnx", "vnnlib", "result", "time_s", "result_file", "domains"]


# ----------------------------------------------------------------------------------------- options
def add_verification_options(p: argparse.ArgumentParser) -> None:
    """Options shared by check and bench (bench applies them to every instance)."""
    p.add_argument("--method", choices=METHODS, default="alpha-crown", help="bound method (default alpha-crown)")
    p.add_argument("--no-bab", action="store_true", help="no branch and bound: falsification and incomplete bounds only")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds per instance (check: default {DEFAULT_CHECK_TIMEOUT:g}; bench: the CSV's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS, else 1)")
    p.add_argument("--attack-share", type=float, default=Settings.attack_share,
                   help=f"fraction of the timeout for falsification (default {Settings.attack_share:g})")
    p.add_argument("--float64", action="store_true", help="float64 on the hot path (default float32)")
    p.add_argument("--max-domains", type=int, default=Settings.max_domains, help="branch and bound domain cap")
    p.add_argument("--batch-size", type=int, default=Settings.batch_size, help="domains bounded per batch")
    p.add_argument("--split", choices=("auto", "input", "activation"), default=Settings.split,
                   help="branch and bound on input dimensions or on activations (default auto: input splitting "
                        "for inputs of <= 16 dimensions)")
    p.add_argument("--branching", choices=("gap", "width"), default=Settings.branching,
                   help="score for splitting non-ReLU neurons: relaxation gap (BBPS-style, default) or interval width")
    p.add_argument("--fsb", type=int, default=Settings.fsb, metavar="K",
                   help="activation splitting: choose each split among the K best heuristic candidates by filtered "
                        "smart branching (default 1: the heuristic's first choice)")
    p.add_argument("--polish", type=int, default=Settings.polish_iters, metavar="STEPS",
                   help="activation splitting: give children within 0.4 of proven STEPS more α/β steps before "
                        "they are split (default 0: off; 20 pays on searches with deep trees under near misses)")
    p.add_argument("--progress", action="store_true", help="show branch-and-bound progress on stderr")
    p.add_argument("--verbose", "-v", action="store_true", help="notes and timings on stderr")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")


def settings_from_args(args: argparse.Namespace, timeout: float) -> Settings:
    try:
        return Settings(method=args.method, no_bab=args.no_bab, timeout=timeout, seed=args.seed,
                        attack_share=args.attack_share, threads=args.threads,
                        dtype="float64" if args.float64 else "float32", verbose=args.verbose,
                        progress=args.progress, max_domains=args.max_domains, batch_size=args.batch_size, split=args.split, branching=args.branching,
                        fsb=args.fsb, polish_iters=args.polish)
    except ValueError as e:
        raise InputError(f"bad option: {e}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("check", help="decide one VNN-LIB property on one model",
                              description="Falsify, then prove: prints the VNN-COMP result "
                                          "(sat + counterexample, unsat, unknown or timeout).")
    p.add_argument("model", help="ONNX model")
    p.add_argument("spec", help="VNN-LIB property")
    p.add_argument("--result", metavar="FILE", help="also write the VNN-COMP result file here")
    add_verification_options(p)
    p.set_defaults(func=run)

    b = subparsers.add_parser("bench", help="run a VNN-COMP instance list (onnx,vnnlib,timeout)",
                              description="Runs every instance (in one process, or N at a time with --jobs N); "
                                          "writes DIR/results.csv and result files; judges against "
                                          "expected.csv beside the list.")
    b.add_argument("instances", help="instances.csv: rows onnx,vnnlib,timeout (paths relative to its folder)")
    b.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every timeout by F")
    b.add_argument("--out", metavar="DIR", default=None, help="output folder (default bench-<benchmark name>)")
    b.add_argument("--limit", type=int, default=None, help="run at most N instances")
    b.add_argument("--every", type=int, default=1, help="run every K-th instance (0, K, 2K, ...)")
    b.add_argument("--offset", type=int, default=0,
                   help="start at the N-th instance (with --every K: N, N+K, ...; shards a list over processes)")
    b.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N instances at a time, each in its own worker process (default 1; --threads is "
                        "then per process, default 1)")
    b.add_argument("--no-progress-bar", action="store_true", help="no tqdm bar on stderr")
    add_verification_options(b)
    b.set_defaults(func=run_bench)


# ------------------------------------------------------------------------------------------- check
def _require_file(path: str, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: {what} file not found")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} file")


def _cex_json(res) -> dict | None:
    if res.verdict != "sat":
        return None
    return {"x": [float(v) for v in res.x], "y": [float(v) for v in res.y]}


def _note_to_stderr(res, verbose: bool, prefix: str = "") -> None:
    """Unknown because of an unsupported operator is always said; other notes with --verbose."""
    if res.note and (verbose or "unsupported operator" in res.note):
        sys.stderr.write(f"verify: note: {prefix}{res.note}\n")


def run(args: argparse.Namespace) -> int:
    from verify import api
    from verify.spec.results import format_result, write_result

    t0 = time.perf_counter()
    _require_file(args.model, "model")
    _require_file(args.spec, "spec")
    settings = settings_from_args(args, args.timeout if args.timeout is not None else DEFAULT_CHECK_TIMEOUT)
    res = api.check(args.model, args.spec, settings)
    if args.result:
        try:
            write_result(args.result, res.verdict, res.x, res.y)
        except OSError as e:
            raise InputError(f"{args.result}: cannot write result file: {e.strerror or e}") from None
    _note_to_stderr(res, args.verbose)
    if args.json:
        print(json.dumps({"result": res.verdict, "time_s": res.time_s, "seconds": time.perf_counter() - t0,
                          "domains": res.domains, "note": res.note, "model": args.model, "spec": args.spec,
                          "counterexample": _cex_json(res)}))
    else:
        sys.stdout.write(format_result(res.verdict, res.x, res.y))
        if args.verbose:
            sys.stderr.write(f"verify: {res.verdict} in {res.time_s:.2f} s (attack {res.attack_time_s:.2f} s, "
                             f"{res.domains} domains)\n")
    return 0


# ------------------------------------------------------------------------------------------- bench
@dataclass
class Instance:
    onnx: str        # as written in the CSV
    vnnlib: str
    timeout: float
    onnx_path: Path  # resolved
    vnnlib_path: Path


def read_instances(csv_path: Path) -> list[Instance]:
    """Rows `onnx,vnnlib,timeout` (no header; a header row is skipped); paths relative to the CSV's folder."""
    try:
        text = csv_path.read_text()
    except OSError as e:
        raise InputError(f"{csv_path}: cannot read instance list: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{csv_path}: instance list is not a text file") from None
    base = csv_path.parent
    out = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if len(row) < 3:
            raise InputError(f"{csv_path}:{lineno}: expected 3 columns onnx,vnnlib,timeout, got {len(row)}")
        try:
            timeout = float(row[2])
        except ValueError:
            if lineno == 1 and not out:
                continue  # header row
            raise InputError(f"{csv_path}:{lineno}: timeout {row[2]!r} is not a number") from None
        if not timeout > 0:
            raise InputError(f"{csv_path}:{lineno}: timeout must be positive, got {row[2]!r}")
        out.append(Instance(row[0], row[1], timeout, base / row[0], base / row[1]))
    if not out:
        raise InputError(f"{csv_path}: no instances (expected rows onnx,vnnlib,timeout)")
    return out


def read_expected(csv_path: Path) -> dict[tuple[str, str], str]:
    """expected.csv beside the instance list: (onnx, vnnlib) -> expected verdict; {} when absent."""
    p = csv_path.parent / "expected.csv"
    if not p.exists():
        return {}
    try:
        with p.open(newline="") as f:
            return {(r["onnx"].strip(), r["vnnlib"].strip()): r["expected"].strip()
                    for r in csv.DictReader(f) if r.get("onnx") and r.get("vnnlib")}
    except (OSError, KeyError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read expected results: {e}") from None


def judge(result: str, expected: str | None) -> str:
    """correct / wrong / unsolved / not judged (expected unknown, disputed or missing)."""
    if expected not in ("sat", "unsat"):
        return "not judged"
    if result == expected:
        return "correct"
    if result in ("sat", "unsat"):
        return "wrong"
    return "unsolved"


@dataclass
class _Caches:
    models: dict[Path, Any] = field(default_factory=dict)
    specs: dict[Path, Any] = field(default_factory=dict)


def _run_instance(inst: Instance, settings: Settings, caches: _Caches):
    """(CheckResult, None) or (None, error message); the model and spec are cached by path."""
    from verify import api

    t0 = time.perf_counter()
    key_m, key_s = inst.onnx_path.resolve(), inst.vnnlib_path.resolve()
    if key_m not in caches.models:
        _require_file(str(inst.onnx_path), "model")
        caches.models[key_m] = api.load_model(str(inst.onnx_path))
    if key_s not in caches.specs:
        _require_file(str(inst.vnnlib_path), "spec")
        caches.specs[key_s] = api.load_spec(str(inst.vnnlib_path))
    spent = time.perf_counter() - t0
    res = api.check(caches.models[key_m], caches.specs[key_s],
                    settings.replace(timeout=max(settings.timeout - spent, 1e-3)))
    res.time_s += spent
    return res


@dataclass
class _Outcome:
    """What one instance gave, in a form a worker process can send back: the verdict (`error` for bad
    input or an internal error, with `message` the one line to print), and for `sat` the counterexample."""

    verdict: str
    time_s: float
    domains: int = 0
    x: Any = None
    y: Any = None
    note: str = ""
    error: str | None = None  # "input" or "internal"
    message: str = ""


def _attempt(inst: Instance, settings: Settings, caches: _Caches) -> _Outcome:
    """Run one instance; bad input and internal errors become an `error` outcome (one instance's failure
    must not end the run)."""
    t0 = time.perf_counter()
    try:
        res = _run_instance(inst, settings, caches)
    except InputError as e:
        return _Outcome("error", time.perf_counter() - t0, error="input", message=f"verify: error: {e}")
    except Exception as e:  # noqa: BLE001
        return _Outcome("error", time.perf_counter() - t0, error="internal",
                        message=f"verify: internal error on {inst.onnx} {inst.vnnlib}: {type(e).__name__}: {e}")
    return _Outcome(res.verdict, res.time_s, res.domains, res.x, res.y, res.note)


_worker_caches: _Caches | None = None


def _worker_init(threads: int | None) -> None:
    """Set up a `--jobs` worker process: quiet warnings and torch threads as the CLI does, and its own
    model/spec caches (a worker keeps them across the instances it runs)."""
    import warnings

    from verify.cli import configure_threads

    global _worker_caches
    warnings.filterwarnings("ignore")
    configure_threads(threads)
    _worker_caches = _Caches()


def _worker_run(inst: Instance, settings: Settings) -> _Outcome:
    return _attempt(inst, settings, _worker_caches if _worker_caches is not None else _Caches())


def _outcomes(instances: list[Instance], settings_of, jobs: int, threads: int | None):
    """(index, outcome) for every instance: in order in this process when `jobs` is 1, else as N worker
    processes finish them. A worker that dies (killed, out of memory) fails its instances as internal
    errors instead of ending the run."""
    if jobs <= 1 or len(instances) <= 1:  # (no pool for an empty list or a single instance)
        caches = _Caches()
        for i, inst in enumerate(instances):
            yield i, _attempt(inst, settings_of(inst), caches)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked copy of a process that has started torch's thread pools can hang
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(instances)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    try:
        futures = {pool.submit(_worker_run, inst, settings_of(inst)): i for i, inst in enumerate(instances)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                outcome = fut.result()
            except Exception as e:  # noqa: BLE001 - the worker process itself failed
                outcome = _Outcome("error", 0.0, error="internal",
                                   message=f"verify: internal error on {instances[i].onnx} {instances[i].vnnlib}: "
                                           f"worker process failed: {type(e).__name__}: {e}")
            yield i, outcome
    except BaseException:  # an interrupt, or the caller stopped early: do not wait for running instances
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _result_name(i: int, inst: Instance) -> str:
    return f"results/{i:04d}_{Path(inst.onnx).stem}__{Path(inst.vnnlib).stem}.txt"


def run_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from verify.spec.results import write_result

    t_start = time.perf_counter()
    csv_path = Path(args.instances)
    if args.every < 1:
        raise InputError(f"--every must be >= 1, got {args.every}")
    if args.timeout_scale <= 0:
        raise InputError(f"--timeout-scale must be positive, got {args.timeout_scale}")
    if args.offset < 0:
        raise InputError(f"--offset must be >= 0, got {args.offset}")
    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    instances = read_instances(csv_path)[args.offset::args.every]
    if args.limit is not None:
        instances = instances[:max(args.limit, 0)]
    expected = read_expected(csv_path)
    out = Path(args.out) if args.out else Path(f"bench-{csv_path.resolve().parent.name}")
    try:
        (out / "results").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create output folder: {e.strerror or e}") from None

    done: dict[int, dict] = {}  # instance index -> its row (workers finish out of order)
    counts = {"correct": 0, "wrong": 0, "unsolved": 0, "not judged": 0}
    verdicts: dict[str, int] = {}
    bad_input = internal = False
    bar = tqdm(total=len(instances), file=sys.stderr, disable=args.no_progress_bar, unit="inst", dynamic_ncols=True)

    def settings_of(inst: Instance) -> Settings:
        return settings_from_args(args, (args.timeout if args.timeout is not None else inst.timeout) * args.timeout_scale)

    for i, oc in _outcomes(instances, settings_of, args.jobs, args.threads):
        inst = instances[i]
        if oc.error:
            bad_input |= oc.error == "input"
            internal |= oc.error == "internal"
            bar.write(oc.message, file=sys.stderr)
        else:
            _note_to_stderr(oc, args.verbose, prefix=f"{inst.onnx} {inst.vnnlib}: ")
        name = _result_name(i, inst)
        sat = oc.verdict == "sat"
        write_result(out / name, oc.verdict, oc.x if sat else None, oc.y if sat else None)
        exp = expected.get((inst.onnx, inst.vnnlib))
        j = judge(oc.verdict, exp)
        counts[j] += 1
        verdicts[oc.verdict] = verdicts.get(oc.verdict, 0) + 1
        if j == "wrong":
            bar.write(f"verify: WRONG: {inst.onnx} {inst.vnnlib}: {oc.verdict}, expected {exp}", file=sys.stderr)
        done[i] = {"onnx": inst.onnx, "vnnlib": inst.vnnlib, "result": oc.verdict, "time_s": f"{oc.time_s:.3f}",
                   "result_file": name, "domains": oc.domains, "expected": exp or "", "judged": j}
        bar.update(1)
        bar.set_postfix(ok=counts["correct"], wrong=counts["wrong"], unsolved=counts["unsolved"])
        # after every instance, in list order: an interrupted run keeps the rows it finished
        _write_rows(out / "results.csv", [done[k] for k in sorted(done)])
    bar.close()
    rows = [done[k] for k in sorted(done)]
    _write_rows(out / "results.csv", rows)
    seconds = time.perf_counter() - t_start
    summary = {"instances": len(rows), "verdicts": verdicts, "judged": expected != {}, **counts,
               "time_s_sum": round(sum(float(r["time_s"]) for r in rows), 3), "seconds": seconds,
               "results_csv": str(out / "results.csv")}
    if args.json:
        print(json.dumps({**summary, "rows": rows}))
    else:
        _print_summary(summary, rows)
    if counts["wrong"] or internal:
        return 1
    return 2 if bad_input else 0


def _print_summary(summary: dict, rows: list[dict]) -> None:
    lines = [f"instances: {summary['instances']}   total time_s: {summary['time_s_sum']:.1f}   "
             f"wall: {summary['seconds']:.1f} s", "", "| verdict | count | time_s sum |", "|---|---|---|"]
    for v in ("sat", "unsat", "unknown", "timeout", "error"):
        sel = [r for r in rows if r["result"] == v]
        if sel:
            lines.append(f"| {v} | {len(sel)} | {sum(float(r['time_s']) for r in sel):.1f} |")
    if summary["judged"]:
        lines += ["", "| correct | wrong | unsolved | not judged |", "|---|---|---|---|",
                  f"| {summary['correct']} | {summary['wrong']} | {summary['unsolved']} | {summary['not judged']} |"]
        for r in rows:
            if r["judged"] == "wrong":
                lines.append(f"WRONG: {r['onnx']} {r['vnnlib']}: {r['result']} (expected {r['expected']})")
    lines.append(f"results: {summary['results_csv']}")
    print("\n".join(lines))
