"""The ``modelservice`` command line.

Each subcommand parses its arguments here and calls one function of the package; heavy imports
(torch, kopf, tritonclient) happen inside the subcommand so ``modelservice validate`` stays fast.
User errors (``UserError``) print one line per problem and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from modelservice import __version__
from modelservice.api.errors import SpecError, UserError


def _cmd_crd(args: argparse.Namespace) -> int:
    from modelservice.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from modelservice.api.loader import load_file

    failed = False
    for file in args.files:
        try:
            for item in load_file(file):
                if not args.quiet:
                    print(f"{file}: {item.model.name}: valid")
        except SpecError as exc:
            failed = True
            for line in exc.lines():
                print(line, file=sys.stderr)
    return 1 if failed else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from modelservice.api.loader import load_file
    from modelservice.render import render_stream

    items = load_file(args.file)
    sys.stdout.write(render_stream([item.model for item in items], namespace=args.namespace))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from modelservice.controller.main import run_operator

    return run_operator(
        namespaces=args.namespace or [],
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        peering=args.peering,
        priority=args.priority,
        verbose=args.verbose,
        prometheus_url=args.prometheus_url,
    )


def _cmd_convert(args: argparse.Namespace) -> int:
    from modelservice.api.loader import load_one
    from modelservice.convert.pipeline import ConvertOptions, convert

    item = load_one(args.file)
    try:
        report = convert(
            item,
            Path(args.out),
            ConvertOptions(cache_dir=Path(args.cache_dir) if args.cache_dir else None, progress=not args.quiet),
        )
    except UserError as exc:
        if args.summary_file:  # the Job's termination message: the operator puts it in the Converted condition
            _write_text(Path(args.summary_file), str(exc).splitlines()[0][:2048] if str(exc) else type(exc).__name__)
        raise _in_file(exc, args.file) from None
    if args.summary_file:
        from modelservice.convert.pipeline import write_summary

        write_summary(report, Path(args.summary_file))
    print(report.summary_line())
    return 0


def _in_file(exc: UserError, file: str) -> UserError:
    """A pipeline error about a spec field, prefixed with the file the spec came from (as validation errors are)."""
    if isinstance(exc, SpecError) or not str(exc).startswith("spec."):
        return exc
    named = UserError(f"{file}: {exc}")
    named.exit_code = exc.exit_code
    return named


def _write_text(path: Path, text: str) -> None:
    import contextlib

    with contextlib.suppress(OSError):  # best effort: the error still reaches stderr and the exit status
        path.write_text(text + "\n", encoding="utf-8")


def _cmd_fetch(args: argparse.Namespace) -> int:
    from modelservice.convert.fetch import fetch_to_dir

    fetch_to_dir(args.uri, Path(args.out), sha256=args.sha256, base_dir=Path.cwd(), progress=not args.quiet)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from modelservice.api.loader import load_one
    from modelservice.serve.local import ServeOptions, serve

    item = load_one(args.file)
    try:
        return serve(
            item,
            ServeOptions(
                http_port=args.http_port,
                grpc_port=args.grpc_port,
                metrics_port=args.metrics_port,
                workdir=Path(args.workdir) if args.workdir else None,
                cache_dir=Path(args.cache_dir) if args.cache_dir else None,
            ),
        )
    except UserError as exc:
        raise _in_file(exc, args.file) from None


def _cmd_tune(args: argparse.Namespace) -> int:
    from modelservice.api.loader import load_one
    from modelservice.tune.report import curve, verdict
    from modelservice.tune.run import TuneOptions, tune

    item = load_one(args.file)
    options = TuneOptions(
        out=Path(args.out) if args.out else None,
        repository=Path(args.repository) if args.repository else None,
        triton_url=args.triton_url,
        max_trials=args.max_trials,
        max_seconds=args.max_seconds,
        warmup=args.warmup,
        window=args.window,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        summary_file=Path(args.summary_file) if args.summary_file else None,
    )
    try:
        tuned = tune(item, options)
    except UserError as exc:
        if args.summary_file:  # the profiling Job's termination message, as the conversion Job's
            _write_text(Path(args.summary_file), str(exc).splitlines()[0][:2048] if str(exc) else type(exc).__name__)
        raise _in_file(exc, args.file) from None
    print(curve(tuned.outcome, tuned.target))
    print(verdict(tuned.performance, tuned.outcome))
    print(f"wrote {tuned.repository} (config.pbtxt tuned, config.untuned.pbtxt kept) and {tuned.performance_file}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from modelservice.serve.infer import InferOptions, infer

    return infer(
        InferOptions(
            url=args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000"),
            model=args.model,
            protocol=args.protocol,
            data=Path(args.data) if args.data else None,
            batch=args.batch,
            count=args.count,
            seed=args.seed,
            texts=list(args.text or []),
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelservice",
        description="Convert, quantize, verify and serve PyTorch models on NVIDIA Triton; the Kubernetes operator.",
    )
    parser.add_argument("--version", action="version", version=f"modelservice {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("run", _cmd_run, "run the operator (kopf), cluster-wide or for the listed namespaces")
    p.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable); default: all")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0: off)")
    p.add_argument("--health-port", type=int, default=8081, help="liveness endpoint port (0: off)")
    p.add_argument("--peering", default=None, help="kopf peering name for standby replicas (default: standalone)")
    p.add_argument("--priority", type=int, default=0, help="kopf peering priority")
    p.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus scraping Triton, for canary analysis (default: $MODELSERVICE_PROMETHEUS_URL; none: canaries "
        "are judged by replica readiness only)",
    )

    add("crd", _cmd_crd, "print the generated CustomResourceDefinition (crds/ holds the same bytes)")

    p = add(
        "validate",
        _cmd_validate,
        "validate ModelService files; exit 1 naming the file and field of each problem",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")

    p = add("render", _cmd_render, "print every object the operator would create for a ModelService, as YAML")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--namespace", default=None, help="namespace when the file names none (default: default)")

    p = add(
        "convert",
        _cmd_convert,
        "fetch, convert, quantize and verify; write a Triton repository and report.json",
    )
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--out", required=True, help="output folder (the Triton model repository)")
    p.add_argument("--cache-dir", default=None, help="conversion cache (default: ~/.cache/modelservice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--summary-file",
        default=None,
        help="also write the report's compact JSON summary here (the conversion Job uses /dev/termination-log)",
    )

    p = add(
        "fetch",
        _cmd_fetch,
        "fetch a model source (file, http(s), s3, gs, pvc) into a folder, checking its digest",
    )
    p.add_argument("uri")
    p.add_argument("--out", required=True)
    p.add_argument("--sha256", default=None)
    p.add_argument("-q", "--quiet", action="store_true")

    p = add("serve", _cmd_serve, "convert (cached) and serve a ModelService on a local Triton, without a cluster")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--workdir", default=None, help="where the runnable repository is written (default: a temp dir)")
    p.add_argument("--cache-dir", default=None, help="conversion cache (default: ~/.cache/modelservice)")

    p = add(
        "tune",
        _cmd_tune,
        "measure Triton configurations and keep the most throughput within spec.serving.latencyTarget",
    )
    p.add_argument("-f", "--file", required=True)
    p.add_argument(
        "--out", default=None, help="converted, tuned repository and performance.json (default: ./<name>-tuned)"
    )
    p.add_argument("--repository", default=None, help="in the profiling pod: the converted repository to tune")
    p.add_argument("--triton-url", default=None, help="in the profiling pod: the running Triton (explicit mode)")
    p.add_argument("--max-trials", type=int, default=None, help="most configurations (default: spec.serving.tuning)")
    p.add_argument("--max-seconds", type=int, default=None, help="time bound (default: spec.serving.tuning)")
    p.add_argument("--window", type=float, default=3.0, help="measured seconds per configuration and load")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    p.add_argument("--cache-dir", default=None, help="conversion cache (default: ~/.cache/modelservice)")
    p.add_argument(
        "--summary-file", default=None, help="compact JSON summary (the profiling Job: /dev/termination-log)"
    )

    p = add("infer", _cmd_infer, "send an inference request to Triton and print the result and latency")
    p.add_argument(
        "--url", default=None, help="host:port of Triton's endpoint (default 127.0.0.1:8000, or :8001 for grpc)"
    )
    p.add_argument("--model", "-m", required=True, help="model name")
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument(
        "--data", default=None, help=".npz with inputs (array per input name, or x); text models: .txt or .jsonl"
    )
    p.add_argument("--text", action="append", help="a text for a text model (repeatable)")
    p.add_argument(
        "--batch", type=int, default=None, help="rows per request (default 1; text models: up to max_batch_size)"
    )
    p.add_argument("--count", type=int, default=1, help="requests to send (latency is reported over all)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except UserError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
