"""The params sections each flow hands its tasks (from core.stage_reads), and the content hash of a user's
source files: what a task's cache key holds besides its own inputs."""

from __future__ import annotations

from typing import Any

from kernelscope.core.params import Params
from kernelscope.core.stage_reads import stage_sections
from kernelscope.kernels.registry import KERNELS, kernel_kind


def sections(params: Params, *names: str) -> dict[str, Any]:
    """Whole sections of params, as JSON."""
    dumped = params.model_dump(mode="json")
    return {name: dumped[name] for name in names}


def source_hash(params: Params, dataset: str) -> str | None:
    """Content hash of a user's data file or folder and weights file: a changed file is a cache miss,
    not a stale hit."""
    from kernelscope.core.fileio import sha256_tree

    source = params.source(dataset)
    if source is None:
        return None
    parts = [sha256_tree(p) for p in (source.data.path, source.model.weights) if p]
    return ",".join(parts) or None


def model_sections(params: Params, dataset: str, *names: str) -> dict[str, Any]:
    """What the kernel stage reads (core/stage_reads.py: the checkpoint's sections, the device, the kernel options),
    plus the whole sections ``names``: the base that kernel_sections trims to one kind."""
    return {**stage_sections(params, "kernel", dataset), **sections(params, *names)}


def kernel_sections(params: Params, kind: str, dataset: str) -> dict[str, Any]:
    """Model sections and the kernel params, minus the options that cannot change this kind
    (so they do not bust its cache)."""
    entry = kernel_kind(kind)
    picked = model_sections(params, dataset, "kernel", "scale")
    # Not the list of kinds, nor the options only other kinds read; what every kind reads (chunk_size, ...) stays.
    others = {key for other in KERNELS.values() for key in other.options} - set(entry.options)
    kernel = {key: value for key, value in picked["kernel"].items() if key != "kinds" and key not in others}
    if kernel["storage"] == "dense":
        del kernel["topk"]  # read only by top-k storage
    for _, section in entry.sections:
        picked[section] = getattr(params, section).model_dump(mode="json")
    # How the work is spread does not change the kernel: only the row ranges enter the cache key.
    picked["scale"] = {
        "runner": picked["scale"]["runner"],
        "dask_threads_per_worker": picked["scale"]["dask_threads_per_worker"],
    }
    return {**picked, "kernel": kernel}


def kglm_sections(params: Params, kind: str, dataset: str) -> dict[str, Any]:
    """What fitting and evaluating one kind's kGLM reads: its kernel's sections and the kglm settings."""
    return {**kernel_sections(params, kind, dataset), "kglm": params.kglm.model_dump(mode="json")}
