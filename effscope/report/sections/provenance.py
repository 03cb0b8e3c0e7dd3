"""Section "provenance": where every number comes from: device, driver, versions, workload, timing protocol,
storage and commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from effscope.profile.record import PROTOCOL
from effscope.report.data import Source, Table, missing_numbers
from effscope.report.markup import facts_html, size_text
from effscope.report.sections._section import Section
from effscope.urls import mask_command, mask_url

__all__ = ["SECTION", "provenance_html", "provenance_section"]


PROTOCOL_NOTE = {  # what a provenance table says beside a timing protocol's name
    PROTOCOL: " (warm-up ≥ 25 ms, adaptive repeats to IQR/median ≤ 5 %, synchronized windows, freed heap kept mapped)",
}


def provenance_section(source: Source) -> Table:
    """Where every number comes from: device, driver, versions, workload, protocol, storage, commands."""
    rows: list[list[Any]] = []

    def distinct(values: Iterable[Any]) -> str:
        vals = list(dict.fromkeys(str(v) for v in values if v not in (None, "")))
        return " | ".join(vals) if vals else "-"

    pts = source.points
    env_keys = [
        ("device", "device_name"),
        ("device type", "device"),
        ("driver", "driver_version"),
        ("CUDA", "cuda_version"),
        ("cuDNN", "cudnn_version"),
        ("CPU", "cpu_model"),
        ("torch", "torch_version"),
        ("python", "python_version"),
        ("fvcore", "fvcore_version"),
        ("effscope (measurements)", "effscope_version"),
        ("host", "hostname"),
        ("OS", "os"),
        ("threads", "torch_threads"),
        ("TF32 matmul", "tf32_matmul"),
        ("attention core", "attention_core"),  # what the workload's attention mode did on this device
    ]
    device_name = source.attrs.get("device_name")
    for label, key in env_keys:
        value = distinct(p.env.get(key) for p in pts)
        if label == "device" and device_name:
            value = str(device_name)
        if value != "-":
            rows.append([label, value])
    for key in ("dtype", "batch", "attention", "compile", "channels_last", "cuda_graph", "flush_cache"):
        value = distinct(p.workload.get(key) for p in pts)
        if value == "-" and key in (source.attrs.get("workload") or {}):
            value = str(source.attrs["workload"][key])
        if value != "-":
            rows.append([f"workload {key}", value])
    sizes = distinct(size_text(p.size, p.kind) for p in pts if p.size)  # tokens for blocks, px for models
    if sizes != "-":
        rows.append(["input sizes", sizes])
    # each number missing for some designs, once, with why (the profiler's reason, kept through an export)
    rows += [[f"missing {name}", text] for name, text in missing_numbers(pts)]
    protocols = distinct(p.protocol for p in pts if p.protocol)
    if protocols != "-":
        rows.append(["timing protocol", protocols + PROTOCOL_NOTE.get(protocols, "")])
    if source.attrs.get("effscope_version"):
        rows.append(["effscope (search)", str(source.attrs["effscope_version"])])
    rows.append(["storage", mask_url(source.storage) if source.storage else "-"])
    rows.append(["study" if source.kind == "study" else "records", source.name])
    space = source.attrs.get("effscope_space") or {}
    if space:
        from effscope.urls import shown_location

        where = shown_location(str(space["path"])) if space.get("path") else ""
        rows.append(["search space", f"{space.get('name', '')} ({where})"])
    if source.attrs.get("command"):
        rows.append(["search command", mask_command(str(source.attrs["command"]))])
    if source.kind != "study":
        cmds = distinct(mask_command(p.command) for p in pts if p.command)
        if cmds != "-":
            rows.append(["profile commands", cmds])
    times = sorted(p.order for p in pts if p.order)
    if times:
        rows.append(["measured between", f"{times[0]} and {times[-1]}"])
    if source.report_command:
        rows.append(["report command", mask_command(source.report_command)])
    return Table(["field", "value"], rows)


def provenance_html(t: Table) -> str:
    """The table as a list of facts."""
    return facts_html([(str(k), v) for k, v in t.rows])


SECTION = Section("provenance", "Provenance", provenance_section, provenance_html, after="trust")
