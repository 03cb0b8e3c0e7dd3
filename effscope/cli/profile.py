"""`effscope profile` and `effscope device`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from effscope.cli._app import (
    DB_HELP,
    FORMAT_HELP,
    SET_HELP,
    app,
    check_format,
    command_line,
    data_on_stdout,
    err,
    esc,
    fmt,
    interrupt_exit_code,
    out,
    shown_url,
    sigterm_as_interrupt,
    write_rows,
)
from effscope.errors import SpecError
from effscope.profile.store import StoreError
from effscope.units import binary_bytes, si

if TYPE_CHECKING:
    from effscope.profile.measure import Options
    from effscope.profile.protocols import Protocol
    from effscope.profile.record import Record
    from effscope.profile.run import Plan
    from effscope.profile.store import RecordStore
    from effscope.profile.target import Target

CROSSCHECK_TOLERANCE = 1e-6  # both counters are exact on matmul-class work, so any difference is a miscount


def _records_table(records: list[Record], train: bool = False) -> Table:
    """The run's Records, one row each; in training mode the times are of a training step."""
    time_key, rate_key = ("train_step_ms", "train_img_s") if train else ("latency_ms", "throughput_img_s")
    step = "step " if train else ""
    table = Table()
    columns = (
        "target",
        "status",
        "params",
        "MACs",
        f"{step}p50 ms",
        f"{step}p90 ms",
        "IQR %",
        "train img/s" if train else "img/s",
        "peak mem MiB",
        "J/img",
        "flags",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "status", "flags") else "right")
    # a flag must not be cut off on a narrow terminal: each on its own line, folded where the column is narrower
    table.columns[-1].overflow = "fold"
    for r in records:
        f = r.flat()
        iqr = f.get(f"{time_key}_iqr")
        p50 = f.get(f"{time_key}_p50")
        mem = f.get("peak_mem_bytes", f.get("peak_rss_bytes"))
        table.add_row(
            esc(r.target + (f" @{f['height']}x{f['width']}" if f.get("height") else "")),
            r.status if r.status == "ok" else f"[red]failed[/red]: {esc(r.error)}",
            fmt(f.get("params"), ",d"),
            si(f["macs"]) if f.get("macs") is not None else "-",
            _ms(p50),
            _ms(f.get(f"{time_key}_p90")),
            fmt(100 * iqr / p50 if iqr is not None and p50 else None, ".1f"),
            fmt(f.get(rate_key), ".1f"),
            fmt(mem, ".1f", 2**20),  # MiB, as metrics.py's catalogue gives it
            fmt(f.get("energy_j_per_img"), ".4f"),
            esc("\n".join(r.flags)),
        )
    return table


def _ms(value: float | None) -> str:
    """Milliseconds to 3 decimals, or to 3 significant digits under 1 ms (a 5 us block reads 0.00512, not 0.005)."""
    return fmt(value, ".3f" if value is None or value >= 1 else "#.3g")


@app.command()
def profile(
    targets: list[str] = typer.Argument(
        None,
        help="Blocks, model presets, shell patterns over their names ('pvtv2_*'), or module:callable or "
        "path/to/file.py:callable returning an nn.Module (one or more).",
    ),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    suite: str = typer.Option(None, "--suite", help="Profile a named suite instead of one target: zoo."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    dtype: str = typer.Option(
        None, "--dtype", help="fp32, or bf16/fp16 under autocast (default fp32).", show_default=False
    ),
    batch: int = typer.Option(
        None, "--batch", help="Images (or token maps) per forward (default 1).", show_default=False
    ),
    protocol: str = typer.Option(
        None, "--protocol", help="Time as a paper did: lightvit, litv2 or timm (its dtype, batch and iteration counts)."
    ),
    by_module: int = typer.Option(
        None, "--by-module", help="Also print params, MACs and time share per module, N levels deep (e.g. 2)."
    ),
    mode: str = typer.Option(
        "infer", "--mode", help="infer, or train: time forward + backward + an AdamW step, with its peak memory."
    ),
    warmup_iters: int = typer.Option(None, "--warmup-iters", help="Exactly N warm-up iterations (fixed protocol)."),
    iters: int = typer.Option(None, "--iters", help="Exactly N timed iterations instead of adaptive repeats / window."),
    resolution: str = typer.Option(None, "--resolution", help="Model input size: 224 or HxW."),
    tokens: str = typer.Option(None, "--tokens", help="Block token grid: 28 or HxW."),
    threads: int = typer.Option(None, "--threads", help="Torch intra-op threads (CPU); pinned for the run."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Run in channels_last memory format."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the target before timing."),
    cuda_graph: bool = typer.Option(
        None,
        "--cuda-graph/--no-cuda-graph",
        help="Also time a CUDA graph replay, to show how host-bound eager is (default: on for CUDA, in inference).",
        show_default=False,
    ),
    flush_cache: bool = typer.Option(False, "--flush-cache", help="Flush the L2 cache before each timed run."),
    attention: str = typer.Option(
        "auto",
        "--attention",
        help="Attention core: auto (per call: a rule on the CPU, timed elsewhere), measured (per call, timed), "
        "sdpa or explicit.",
    ),
    sweep: bool = typer.Option(False, "--sweep", help="Batch sweep (powers of two) for peak throughput."),
    elementwise: bool = typer.Option(False, "--elementwise", help="Also count element-wise ops."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip latency timing."),
    no_throughput: bool = typer.Option(False, "--no-throughput", help="Skip the throughput window."),
    max_time: float = typer.Option(5.0, "--max-time", help="Cap on adaptive latency repeats, seconds."),
    timeout: float = typer.Option(600.0, "--timeout", help="Per-target limit, seconds; past it the target fails."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    json_out: str = typer.Option(None, "--json", help="Also write this run's Records to a JSON file (- for stdout)."),
    csv_out: str = typer.Option(None, "--csv", help="Also write this run's Records to a CSV file (- for stdout)."),
    format_: str = typer.Option("table", "--format", help=FORMAT_HELP),
    report: str = typer.Option(None, "--report", help="Also write an HTML report of this run's Records to this file."),
) -> None:
    """Count and measure a target (or a suite): params, MACs, latency, throughput, memory, energy."""
    from effscope.output import check_output
    from effscope.profile.measure import Options
    from effscope.profile.protocols import apply_protocol, get_protocol
    from effscope.profile.record import Workload
    from effscope.profile.run import (
        Plan,
        check_device,
        check_input_size,
        default_cuda_graph,
        parse_size,
        plan_suite,
        validate_options,
        validate_workload,
    )
    from effscope.profile.store import RecordStore
    from effscope.profile.target import expand_patterns, resolve_target
    from effscope.urls import database_url

    output, json_out, csv_out = _output_format(check_format(format_), json_out, csv_out)
    if by_module is not None and by_module < 1:
        raise SpecError(f"--by-module takes the number of levels to show, an integer >= 1, but got {by_module}")
    if bool(targets) == (suite is not None):
        raise SpecError("give either a TARGET or --suite NAME (not both, not neither)")
    size = parse_size(resolution, "--resolution")
    grid = parse_size(tokens, "--tokens")
    if size and grid:
        raise SpecError("--resolution is for models and --tokens for blocks; give one of them")
    timing = apply_protocol(
        protocol,
        device,
        dtype=dtype,
        batch=batch,
        warmup_iters=warmup_iters,
        iters=iters,
        latency=False if no_latency else None,
    )
    paper = get_protocol(timing.protocol) if timing.protocol else None
    workload = validate_workload(
        Workload(
            device=device,
            dtype=timing.dtype,
            batch=timing.batch,
            size=size or grid,
            threads=threads,
            channels_last=channels_last,
            compile=compile_,
            cuda_graph=default_cuda_graph(device, mode) if cuda_graph is None else cuda_graph,
            flush_cache=flush_cache,
            attention=attention,
            mode=mode,
        )
    )
    options = validate_options(
        Options(
            elementwise=elementwise,
            throughput=not no_throughput,
            sweep=sweep,
            max_time_s=max_time,
            timeout_s=timeout,
            **timing.options(),
        )
    )
    check_device(workload.device)
    notes: list[str] = []
    if suite is not None:
        if set_ or size or grid:
            raise SpecError("--suite runs each target at its defaults; --set, --resolution and --tokens do not apply")
        plans = plan_suite(suite, workload)
    else:
        if set_ and len(targets) > 1:
            raise SpecError("--set applies to one target; profile the others in their own command")
        plans = []
        for target in expand_patterns(targets):
            resolved = resolve_target(target, assignments=set_)
            notes += _ignored_settings(resolved, set_)
            if resolved.kind == "block" and size:
                raise SpecError(f"'{target}' is a block: give its token grid with --tokens, not --resolution")
            if resolved.kind == "model" and grid:
                raise SpecError(f"'{target}' is a model: give its input size with --resolution, not --tokens")
            if size or grid:
                check_input_size(resolved, size or grid, "--resolution" if size else "--tokens")
            plans.append(Plan(resolved, workload))
    url = database_url(db)
    for path in (json_out, csv_out):  # before measuring: never onto the database, never into nowhere
        if path:
            check_output(path, databases=[url])
    if report:
        from effscope.report import check_report_output

        check_report_output(report, protect=[url])
    with data_on_stdout(output):
        for note in notes:
            out.print(f"[dim]note: {esc(note)}[/dim]")
        store = RecordStore(url)
        command = command_line()
        run = _RunSoFar(total=len(plans))
        show = partial(_show_records, plans=plans, by_module=by_module, paper=paper, options=options)
        try:
            with sigterm_as_interrupt():  # `timeout`, a CI cancel: ended as Ctrl-C ends it, exit code 143
                _run_with_progress(plans, options, store, {"command": command}, run)
        except KeyboardInterrupt as e:
            _end_early("interrupted", run, store, show, json_out, csv_out, report, command, output)
            raise typer.Exit(interrupt_exit_code(e)) from None
        except StoreError:
            _end_early("the record store failed", run, store, show, json_out, csv_out, report, command, output)
            raise
        records = run.records
        show(records)
        out.print(f"{len(records)} record(s) stored in {shown_url(store.url)}")
        _write_outputs(records, json_out, csv_out, report, store.url, command)
    if output != "table":
        write_rows([r.flat() for r in records], output)
    if any(r.status != "ok" for r in records) and suite is None:
        raise typer.Exit(1)


def _show_records(
    records: list[Record], plans: list[Plan], by_module: int | None, paper: Protocol | None, options: Options
) -> None:
    """The run's Records as a finished run and one ended early both show them: the table, each Record's notes (and
    module table), what is missing, the protocol replayed and the MACs-latency rank correlation."""
    out.print(_records_table(records, train=bool(plans) and plans[0].workload.mode == "train"))
    for r in records:
        _print_notes(r)
        if by_module is not None and r.status == "ok":
            out.print(_module_table(r, plans[records.index(r)].target, by_module))  # Records come in plan order
    _print_missing(records)
    if paper is not None:
        changed = f"; changed here: {', '.join(options.protocol_changes)}" if options.protocol_changes else ""
        out.print(f"protocol {paper.name}: {esc(paper.source)}{esc(changed)}")
    if len(records) > 2:
        from effscope.profile.run import rank_correlation
        from effscope.stats import MIN_RANK_PAIRS

        corr = rank_correlation(records)
        said = f"MACs vs measured p50 latency across {corr['n']} targets: "
        if corr["n"] >= MIN_RANK_PAIRS:
            out.print(said + f"Spearman {corr['spearman']:.3f}, Kendall {corr['kendall']:.3f}")
        elif corr["n"] > 2:  # fewer measured latencies (--no-latency, failures) make no ranking to speak of
            out.print(said + f"too few for a rank correlation (it needs {MIN_RANK_PAIRS}; with 2 it is always ±1)")


@dataclass
class _RunSoFar:
    """The Records a profile run has measured so far and how many of them are stored: what an early end reports."""

    total: int
    records: list[Record] = field(default_factory=list)
    stored: int = 0


def _end_early(
    why: str,
    run: _RunSoFar,
    store: RecordStore,
    show: Callable[[list[Record]], None],
    json_out: str | None,
    csv_out: str | None,
    report: str | None,
    command: str,
    output: str,
) -> None:
    """After Ctrl-C, SIGTERM or a failed store write: show what was measured (`show`, as a finished run shows it),
    say what is stored, and still write the requested files for every measured Record, so that a Record the store
    refused is kept in one of them."""
    measured, unstored = run.records, run.records[run.stored :]
    if measured:
        show(measured)
    err.print(
        f"{why}: stopped after {len(measured)} of {run.total} target(s); {run.stored} record(s) stored in "
        f"{shown_url(store.url)}"
    )
    if measured:
        _write_outputs(measured, json_out, csv_out, report, store.url, command)
        if output != "table":
            write_rows([r.flat() for r in measured], output)
    if unstored:  # the store refused them: keep them whole in a file rather than lose a measurement
        _keep_unstored(unstored, store.url, json_out)


def _keep_unstored(unstored: list[Record], store_url: str, json_out: str | None) -> None:
    """Write the Records the store refused, whole (Record.to_dict()), to a new file in the working folder, else in
    the temp folder, and print the command that adds them to the store once it works."""
    import json
    import os
    import shlex
    import tempfile
    import time
    from pathlib import Path

    from effscope.output import OutputError, write_atomic
    from effscope.urls import mask_url

    names = ", ".join(r.target for r in unstored)
    text = json.dumps([r.to_dict() for r in unstored], indent=1)
    # the pid keeps apart two runs that the same locked store stops in the same second
    name = f"effscope-unstored-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    refusals = []
    for rescue in (Path(name), Path(tempfile.gettempdir()) / name):
        try:
            write_atomic(rescue, lambda tmp: tmp.write_text(text, encoding="utf-8"), databases=[store_url])
        except OutputError as e:
            refusals.append(str(e))
            continue
        err.print(f"not stored: {esc(names)}; kept whole in {esc(rescue)}; once the store works, this adds them:")
        url = mask_url(store_url)
        note = "   (put the password back in place of ***)" if "***" in url else ""
        # on a line of its own and never wrapped, so that it can be pasted as it is
        command = f"effscope import {shlex.quote(str(rescue))} --db {shlex.quote(url)}"
        err.print(f"  {command}{note}", markup=False, highlight=False, soft_wrap=True)
        return
    kept = f" and {esc(json_out)} (flat rows)" if json_out else ""
    err.print(f"not stored: {esc(names)}; nor kept whole in a file ({esc('; '.join(refusals))}); see the table{kept}")


def _write_outputs(
    records: list[Record], json_out: str | None, csv_out: str | None, report: str | None, store_url: str, command: str
) -> None:
    """The files the run was asked for: --json, --csv and --report, each of these Records."""
    if json_out or csv_out:
        from effscope.profile.store import rows_frame, write_table

        df = rows_frame([r.flat() for r in records])
        for path, fmt_ in ((json_out, "json"), (csv_out, "csv")):
            if path:
                out.print(f"records written to {esc(write_table(df, path, fmt_, databases=[store_url]))}")
    if report:
        from effscope.report import build_report

        path = build_report(output=report, records=records, command=command, protect=[store_url])
        out.print(f"report written to {esc(path)}")


def counting_notes(r: Record) -> list[str]:
    """What the MACs leave out, in sentences: pooling reads, element-wise ops (countable with --elementwise) and
    ops no formula counts."""
    from effscope.profile.counting import is_elementwise_op

    notes = []
    if r.counts.get("pool_ops"):
        notes.append(f"pooling reads, kept out of MACs: {r.counts['pool_ops']:,} (pool_ops)")
    uncounted = sorted((r.details.get("count", {}).get("uncounted_ops") or {}).items())
    kinds = {
        True: "not in the MAC convention (element-wise; --elementwise counts them)",
        False: "counted nowhere (no formula in effscope or fvcore)",
    }
    for elementwise, what in kinds.items():
        listed = ", ".join(f"{op} x{n}" for op, n in uncounted if is_elementwise_op(op) == elementwise)
        if listed:
            notes.append(f"{what}: {listed}")
    return notes


def _print_notes(r: Record) -> None:
    """What a user should know about one Record beyond the table: roofline position, counting warnings and the ops
    outside the MAC convention."""
    roof = r.roofline
    if roof.get("intensity_mac_per_byte") is not None:
        where = (
            f", {100 * roof['roofline_fraction']:.1f} % of its roofline bound ({roof['roofline_bound_by']}-bound)"
            if roof.get("roofline_fraction") is not None
            else ""
        )
        out.print(f"[dim]{esc(r.target)}: {roof['intensity_mac_per_byte']:.2f} MAC/byte (estimated){where}[/dim]")
    diff = r.counts.get("crosscheck_rel_diff")
    if diff is not None and abs(diff) > CROSSCHECK_TOLERANCE:
        err.print(
            f"warning: {esc(r.target)}: fvcore and torch's FlopCounterMode disagree on matmul/conv/attention work "
            f"by {100 * diff:+.3f} %; the MACs may be miscounted (see Record.details['count'])"
        )
    for note in counting_notes(r):
        out.print(f"[dim]{esc(r.target)}: {esc(note)}[/dim]")
    peak = r.throughput.get("peak_throughput_img_s")
    if peak is not None:
        out.print(
            f"[dim]{esc(r.target)}: batch sweep: peak {peak:,.1f} img/s at batch "
            f"{r.throughput.get('peak_throughput_batch')} (details in the Record's batch_sweep)[/dim]"
        )
    if r.workload.get("device") == "cpu" and r.workload.get("dtype") == "fp16":
        out.print(
            f"[dim]{esc(r.target)}: fp16 autocast on a CPU: most CPUs lack fp16 matrix units, so this often times a "
            "slow emulation; compare with --dtype fp32 or bf16[/dim]"
        )
    choices = r.details.get("attention_choices")
    if choices:
        cores = ", ".join(f"{core} for {n}" for core, n in sorted(Counter(c["core"] for c in choices).items()))
        out.print(
            f"[dim]{esc(r.target)}: attention core timed per call: {cores} of {len(choices)} distinct calls[/dim]"
        )


def _module_table(record: Record, target: Target, depth: int) -> Table:
    """Params, MACs and measured time per module down to `depth` levels, as fvcore's flop_count_table shows counts.

    Time shares are of the outermost timed modules' total (hooks synchronize around each module, so the times
    serve the shares, not a latency)."""
    counted = record.details.get("count", {}).get("macs_by_module") or {}
    timed = record.details.get("time_by_module_ms") or {}
    params = {}
    if target.kind != "custom":  # a registered target rebuilds for free on the meta device
        built = target.build("meta")
        params = {name: sum(p.numel() for p in m.parameters()) for name, m in built.named_modules()}
    outermost = [n for n in timed if not any(n.startswith(f"{o}.") for o in timed if o != n)]
    total_ms = sum(timed[n] for n in outermost)
    total_macs = counted.get("") or 0
    table = Table(title=f"{esc(record.target)} by module", title_justify="left")
    for col in ("module", "params", "MACs", "MACs %", "time ms", "time %"):
        table.add_column(col, justify="left" if col == "module" else "right")
    names = [n for n in dict.fromkeys([*counted, *timed]) if n.count(".") < depth]
    for name in names:
        macs, ms = counted.get(name), timed.get(name)
        if ms is None and name:  # a container never called itself (ModuleList): the sum of its timed parts
            inside = [timed[n] for n in outermost if n.startswith(f"{name}.")]
            ms = sum(inside) if inside else None
        table.add_row(
            esc(name or "(whole)"),
            fmt(params.get(name), ",d"),
            si(macs) if macs is not None else "-",
            fmt(100 * macs / total_macs if macs is not None and total_macs else None, ".1f"),
            fmt(ms, ".3f"),
            fmt(100 * ms / total_ms if ms is not None and total_ms else None, ".1f"),
        )
    return table


def _print_missing(records: list[Record]) -> None:
    """Which numbers are missing and why: once for the run where every target misses them for the same reason (no
    GPU, no calibration), else per target."""
    groups: dict[tuple[str, str], list[str]] = {}  # (missing names, why) -> targets
    for r in records:
        by_reason: dict[str, list[str]] = {}
        for name, why in r.missing.items():
            by_reason.setdefault(why, []).append(name)
        for why, names in by_reason.items():
            shown = ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} and {len(names) - 2} more"
            groups.setdefault((shown, why), []).append(r.target)
    for (shown, why), targets in groups.items():
        who = "every target" if len(targets) == len(records) > 1 else ", ".join(targets)
        out.print(f"[dim]{esc(who)}: {esc(shown)} missing: {esc(why)}[/dim]")


def _ignored_settings(target: Target, assignments: list[str]) -> list[str]:
    """A note for each --set knob that the design ignores with the other knobs given: it is recorded as built."""
    from effscope.knobs import format_value

    inert = target.config.inert_knobs() if target.config is not None else {}
    given = {text.partition("=")[0].strip() for text in assignments}
    return [
        f"{target.name} ignores {name} with these knobs; it is recorded as built, {name}={format_value(value)}"
        for name, value in inert.items()
        if name in given
    ]


def _output_format(output: str, json_out: str | None, csv_out: str | None) -> tuple[str, str | None, str | None]:
    """(--format, --json file, --csv file) with `-` meaning stdout; a file whose suffix names another format is
    refused rather than silently written in the wrong one."""
    from pathlib import Path

    from effscope.profile.store import EXPORT_FORMATS

    if json_out == "-" and csv_out == "-":
        raise SpecError("--json - and --csv - both ask for stdout; give one of them")
    for flag, path, kind in (("--json", json_out, "json"), ("--csv", csv_out, "csv")):
        if path == "-":
            if output not in ("table", kind):
                raise SpecError(f"{flag} - and --format {output} both ask for stdout; give one of them")
            output = kind
        elif path:
            suffix = Path(path).suffix.lower()
            if suffix in EXPORT_FORMATS and suffix != f".{kind}":
                raise SpecError(
                    f"{flag} writes {kind.upper()}, but '{path}' ends in {suffix}: name it .{kind}, "
                    f"or write every stored record with effscope export -o FILE{suffix}"
                )
    return output, None if json_out == "-" else json_out, None if csv_out == "-" else csv_out


def _run_with_progress(
    plans: list[Plan], options: Options, store: RecordStore, provenance: dict[str, str], run: _RunSoFar
) -> None:
    """Measure the plans into `run`, storing each Record as it arrives and showing which target is being measured
    and about how long is left: a bar on a terminal, one line per target otherwise (logs, CI, `make demo`)."""
    import time
    from contextlib import ExitStack, closing

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from effscope.profile.run import measure_plans, store_record

    started = time.monotonic()
    calibrations: dict = {}  # one roofline calibration lookup per (device, dtype, threads)

    def describe(i: int) -> str:
        return f"measuring {esc(plans[i].target.name)}" if i < run.total else "done"

    with ExitStack() as stack:
        if err.is_terminal:
            progress = stack.enter_context(
                Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(),
                    TextColumn("left"),
                    TimeRemainingColumn(),
                    console=err,
                    transient=True,
                )
            )
            task = progress.add_task(describe(0), total=run.total)

            def show(_record: Record) -> None:
                progress.update(task, advance=1, description=describe(len(run.records)))

        else:

            def show(record: Record) -> None:
                done, elapsed = len(run.records), time.monotonic() - started
                left = f"; about {elapsed / done * (run.total - done):.0f} s left" if done < run.total else ""
                err.print(f"[{done}/{run.total}] {esc(record.target)}: {record.status}, {elapsed:.0f} s so far{left}")

        arriving = stack.enter_context(closing(measure_plans(plans, options, provenance=provenance)))
        for record in arriving:
            run.records.append(record)
            store_record(record, store, calibrations)
            run.stored += 1
            show(record)


@app.command("device")
def device_cmd(
    calibrate: bool = typer.Option(
        False, "--calibrate", help="Measure peak matmul MAC/s per dtype and copy bandwidth; store them as a Record."
    ),
    device: str = typer.Option(None, "--device", help="With --calibrate: cpu, cuda or cuda:N (default cpu)."),
    dtype: list[str] = typer.Option(
        None, "--dtype", help="With --calibrate: dtypes to measure (repeatable; default fp32, bf16 and fp16)."
    ),
    threads: int = typer.Option(None, "--threads", help="With --calibrate: torch intra-op threads (CPU), pinned."),
    gemm_sizes: str = typer.Option(
        None, "--gemm-sizes", help="With --calibrate: GEMM sizes n to try, e.g. 512,1024 (default by device type)."
    ),
    copy_mib: int = typer.Option(None, "--copy-mib", help="With --calibrate: copied tensor size, MiB."),
    max_time: float = typer.Option(
        None, "--max-time", help="With --calibrate: cap on each timing's repeats, s (default 1)."
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """What effscope sees: CPU, threads, and GPU name, driver, clocks and power limits via NVML; --calibrate
    measures the roofline (peak matmul rate, copy bandwidth) that profiles are compared with."""
    calibration_options = {
        "--device": device,
        "--dtype": dtype or None,
        "--threads": threads,
        "--gemm-sizes": gemm_sizes,
        "--copy-mib": copy_mib,
        "--max-time": max_time,
    }
    if calibrate:
        _calibrate(device or "cpu", dtype or ["fp32", "bf16", "fp16"], threads, gemm_sizes, copy_mib, max_time, db)
        return
    given = [option for option, value in calibration_options.items() if value is not None]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise SpecError(f"{', '.join(given)} {verb} only with --calibrate (effscope device --calibrate {given[0]} ...)")
    from effscope.profile.env import cpu_info
    from effscope.profile.telemetry import gpu_info, nvml_available

    table = Table(title="device", title_justify="left")
    table.add_column("property")
    table.add_column("value")
    for key, value in cpu_info().items():
        table.add_row(f"cpu.{key}", _readable(key, value))
    ok, reason = nvml_available()
    if ok:
        for key, value in gpu_info().items():
            table.add_row(f"gpu.{key}", _readable(key, value))
    else:
        table.add_row("gpu", f"none visible ({esc(reason)})")
    out.print(table)


def _readable(key: str, value: object) -> str:
    """A device property in the unit its name says (bytes as GiB, watts, MHz); missing shown as '-'."""
    if value is None or value == {}:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if key.endswith("_bytes"):
            return binary_bytes(value)
        if key.endswith("_w"):
            return f"{value:g} W"
        if key.endswith("_mhz"):
            return f"{value:g} MHz"
    return esc(value)


def _calibrate(
    device: str,
    dtypes: list[str],
    threads: int | None,
    gemm_sizes: str | None,
    copy_mib: int | None,
    max_time: float | None,
    db: str | None,
) -> None:
    import math

    from effscope.profile.record import Workload
    from effscope.profile.roofline import (
        AMP_DTYPES,
        CONTENDED,
        MAX_COPY_BYTES,
        MAX_GEMM_N,
        calibrate,
        calibration_table,
    )
    from effscope.profile.run import check_device, validate_workload
    from effscope.profile.store import RecordStore, new_sqlite_file, remove_if_empty
    from effscope.urls import database_url

    check_device(validate_workload(Workload(device=device, threads=threads)).device)
    sizes = None
    if gemm_sizes is not None:
        try:
            sizes = tuple(int(n) for n in gemm_sizes.split(","))
        except ValueError:
            sizes = ()
        if not sizes or not 1 <= min(sizes) <= max(sizes) <= MAX_GEMM_N:
            raise SpecError(
                f"--gemm-sizes takes integers in [1, {MAX_GEMM_N}] separated by commas, but got '{gemm_sizes}'"
            )
    max_copy_mib = MAX_COPY_BYTES // 2**20
    if copy_mib is not None and not 1 <= copy_mib <= max_copy_mib:
        raise SpecError(f"--copy-mib must be an integer in [1, {max_copy_mib}], but got {copy_mib}")
    if max_time is None:
        max_time = 1.0
    elif not (math.isfinite(max_time) and max_time > 0):
        raise SpecError(f"--max-time must be a positive number of seconds, but got {max_time:g}")
    known = ("fp32", *AMP_DTYPES)
    if bad := [d for d in dtypes if d not in known]:
        raise SpecError(f"--dtype must be one of {', '.join(known)}, but got {', '.join(bad)}")
    new_file = new_sqlite_file(database_url(db))  # removed again if the calibration ends before it is stored
    store = RecordStore(db)  # opened first: a bad --db fails before minutes of timing
    cal = None
    try:
        with sigterm_as_interrupt():  # `timeout`, a CI cancel: ended as Ctrl-C ends it, exit code 143
            cal = calibrate(
                device,
                dtypes=dtypes,
                threads=threads,
                sizes=sizes,
                copy_bytes=copy_mib * 2**20 if copy_mib else None,
                max_time_s=max_time,
            )
    except KeyboardInterrupt as e:  # typer would exit 130 silently
        err.print("interrupted: the calibration had not finished, so nothing was stored", markup=False)
        raise typer.Exit(interrupt_exit_code(e)) from None
    finally:
        if cal is None and new_file is not None:  # stopped or refused: nothing to store
            store.engine.dispose()
            remove_if_empty(new_file)
    record = cal.to_record(command=command_line())
    store.add(record)
    threads_note = f", {cal.threads} thread(s)" if cal.threads is not None else ""
    table = Table(title=f"roofline of {cal.device_name} ({cal.device}{threads_note})", title_justify="left")
    for col in ("dtype", "peak GMAC/s", "peak GFLOP/s", "GEMM n", "copy GB/s", "ridge MAC/B", "CPU util"):
        table.add_column(col, justify="left" if col == "dtype" else "right")
    for row in calibration_table(cal):
        if "unsupported" in row:
            table.add_row(row["dtype"], f"[dim]not measured: {esc(row['unsupported'])}[/dim]", "", "", "", "", "")
            continue
        table.add_row(
            row["dtype"],
            fmt(row["peak_mac_s"], ".1f", 1e9),
            fmt(row["peak_flop_s"], ".1f", 1e9),
            fmt(row["gemm_n"], "d"),
            fmt(row["bandwidth_bytes_s"], ".1f", 1e9),
            fmt(row["ridge_mac_per_byte"], ".2f"),
            fmt(row["cpu_util"], ".2f"),
        )
    out.print(table)
    if CONTENDED in cal.flags:
        err.print(
            "warning: other processes used the cores during the calibration (CPU time / wall time x threads < 0.9); "
            "the roofs read low: run it again on an idle machine"
        )
    out.print(
        f"copy of {cal.copy_bytes / 2**20:.0f} MiB, bytes read + written; calibration record {record.uid} "
        f"stored in {shown_url(store.url)}"
    )
    if cal.device_identity is not None:  # what it is matched on beside the name (docs/measurement.md#the-same-device)
        out.print(f"it serves measurements on this CPU: {cal.device_identity}")
