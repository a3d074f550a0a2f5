"""What each stage reads, declared once: its params keys and its code.

``STAGES`` maps a stage name to the module that runs it, the params it reads and the code it imports. dvc.yaml's
``params:`` and code ``deps:`` are these (tests/test_stage_reads.py compares them), and the Prefect flows build each
task's ``sections`` from them (``stage_sections``), so a task's cache key holds exactly what its stage reads. A task
rebuilds its params with ``params_for``: reading a key its stage does not declare (or that its flow did not send)
raises, instead of silently taking the model's default.

Two kinds of reads. ``params``: keys that shape the stage's outputs (DVC reruns the stage when one changes).
``verifies``: keys the stage reads only to check an input artifact against the provenance it records (a checkpoint's
architecture, a kernel's projection); the stage that wrote that input lists them as its params, so DVC reruns it,
and this stage through its changed input. MLflow tags (``params_hash``) read every section; they are not outputs.

DVC stages are named as in dvc.yaml; a Prefect task doing the same work uses the same entry (prepare-data: ``data``,
train-model: ``train``, write-kernel: ``kernel``, sample-probe-losses: ``loss_kernel``, train-multitask-model:
``multitask_train``, multitask-loss-kernel: ``multitask_loss_kernel``, the structure tasks: ``structure`` or
``structure_multitask``, poison-data: ``poison``, train-poisoned-model: ``poison_train``, assemble-forensic-kernel:
``poison_kernel``). The other tasks have entries of their own (``dvc=False``), named after the task's function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.params import Params, params_from_dict
from kernelscope.core.params_view import Guard, guarded
from kernelscope.core.provenance import MULTITASK_TRAINING_FIELDS, POISONING_FIELDS
from kernelscope.kernels.registry import KERNELS
from kernelscope.models.zoo import MODELS

# Placeholders for what the registered kernel kinds read, expanded when an entry is read, so a kind registered after
# this module was imported counts (kernels.registry: a new kind is one register_kernel call).
# every params.kernel key some kind reads (kernel_sections sends a task its kind's), and how a kernel file holds its
# rows (kernel.storage, kernel.topk: recorded, checked on read)
KERNEL_OPTIONS = "kernel.<options>"
KERNEL_SECTIONS = "<kind sections>"  # every section some kind reads whole (the loss kernels: loss_kernel)


def _expand(keys: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for key in keys:
        if key == KERNEL_OPTIONS:
            out += [f"kernel.{option}" for entry in KERNELS.values() for option in entry.options]
            out += ["kernel.storage", "kernel.topk"]
        elif key == KERNEL_SECTIONS:
            out += [section for entry in KERNELS.values() for _, section in entry.sections]
        else:
            out.append(key)
    return tuple(dict.fromkeys(out))  # key groups share keys (seed)


@dataclass(frozen=True)
class StageReads:
    """One stage: the module whose functions run it, the params keys it reads, the code it imports."""

    module: str  # tests walk this module's imports: each must lie in ``code``
    declared_params: tuple[str, ...]  # sections ('kglm') or dotted keys ('kernel.chunk_size') that shape its outputs
    declared_verifies: tuple[str, ...] = ()  # keys read only to check an input artifact against its recorded provenance
    code: tuple[str, ...] = ()  # folders and files (paths from the project root) of the code it runs
    dvc: bool = True  # a stage of dvc.yaml; False: a Prefect task's own stage

    @property
    def params(self) -> tuple[str, ...]:
        return _expand(self.declared_params)

    @property
    def verifies(self) -> tuple[str, ...]:
        return _expand(self.declared_verifies)

    @property
    def reads(self) -> tuple[str, ...]:
        """Every key the stage may read: its params, then what it verifies."""
        return tuple(dict.fromkeys((*self.params, *self.verifies)))


def _keys(section: str, names: Any) -> tuple[str, ...]:
    return tuple(f"{section}.{name}" for name in names)


def _all_but(section: str, *excluded: str) -> tuple[str, ...]:
    """Every key of a section except ``excluded`` (a key added to the section later is read too)."""
    fields = Params.model_fields[section].annotation.model_fields
    return _keys(section, (name for name in fields if name not in excluded))


SRC = "src/kernelscope"
# core.provenance rebuilds models (models) and reads the kernel registry (kernels), models.zoo builds the modular
# model (loss_kernel) and every artifact records kernelscope.__version__: every stage imports these.
SHARED_CODE = (
    f"{SRC}/__init__.py",
    f"{SRC}/core",
    f"{SRC}/data",
    f"{SRC}/kernels",
    f"{SRC}/loss_kernel",
    f"{SRC}/models",
)


def _code(*capabilities: str, cli: bool = True) -> tuple[str, ...]:
    """A stage's code: the shared capabilities, its own, and for a DVC stage its command (cli.py parses it,
    commands.py runs it and writes the metrics files)."""
    return (
        *((f"{SRC}/cli.py", f"{SRC}/commands.py") if cli else ()),
        *SHARED_CODE,
        *(f"{SRC}/{name}" for name in capabilities),
    )


ARCH_SECTIONS = tuple(dict.fromkeys(entry.section for entry in MODELS.values()))  # train, cnn, resnet
# What rebuilds a dataset's model: the registry architecture's section (train.arch, or a source's model.registry:
# any of them, so all) or the user's factory (sources), and the seed. Checked against the checkpoint it loads.
CHECKPOINT = ("seed", *ARCH_SECTIONS, "sources")
KERNEL = ("seed", "device", "kernel.chunk_size", "kernel.memory_budget_mb", KERNEL_OPTIONS)
# A kGLM stage loads the checkpoint and its kernels; the memory budget decides whether it streams the fit from disk.
KGLM_CHECKS = (*CHECKPOINT, KERNEL_OPTIONS, "kernel.memory_budget_mb")
KGLM_FIT = _all_but("kglm", "alpha")  # the forensic kGLMs take poison.kglm_alpha instead
MULTITASK_MODEL = _keys(
    "multitask", MULTITASK_TRAINING_FIELDS
)  # what shapes the modular model (the rest is its sampler's)
POISONING = _keys("poison", POISONING_FIELDS)
STRUCTURE = ("seed", *_all_but("structure", "subjects"))  # subjects: the models the main flow probes; no stage reads it

SURROGATE, STRUCTURE_STAGES = "kernelscope.surrogate.stages", "kernelscope.structure.stages"
FORENSICS, FORENSICS_CODE = "kernelscope.forensics.stages", _code("forensics", "surrogate")
MULTITASK, SWEEP = "kernelscope.loss_kernel.multitask_stages", "kernelscope.loss_kernel.sweep"
COUNTERFACTUAL, COUNTERFACTUAL_CODE = "kernelscope.counterfactual.stages", _code("counterfactual", "surrogate")
COUNTERFACTUAL_READS = (
    "seed",
    "counterfactual",
    "kernel.kinds",
    "kernel.chunk_size",  # mislabel detection computes the noisy model's kernels and fits their kGLMs
    "kernel.memory_budget_mb",
    KERNEL_OPTIONS,
    "kglm",
    *CHECKPOINT[1:],  # the architecture's sections and sources: the retrained models follow the run's recipe
)
TASK_SURROGATE, TASK_FORENSICS = _code("surrogate", cli=False), _code("forensics", "surrogate", cli=False)

STAGES: dict[str, StageReads] = {
    # dvc.yaml's stages, each one `kernelscope` command (kernelscope.cli), in pipeline order
    "data": StageReads("kernelscope.data.stages", ("seed", "data", "sources"), code=_code()),
    "train": StageReads("kernelscope.models.stages", CHECKPOINT, ("data",), _code()),
    "kernel": StageReads("kernelscope.kernels.stages", KERNEL, CHECKPOINT, _code()),
    "kglm": StageReads(SURROGATE, ("seed", "kglm", "kernel.kinds"), KGLM_CHECKS, _code("surrogate")),
    "loss_kernel": StageReads("kernelscope.loss_kernel.stages", ("seed", "loss_kernel"), CHECKPOINT, _code()),
    "multitask_train": StageReads(MULTITASK, ("seed", *MULTITASK_MODEL), code=_code()),
    "multitask_loss_kernel": StageReads(MULTITASK, ("seed", "multitask"), code=_code()),
    "structure": StageReads(STRUCTURE_STAGES, STRUCTURE, CHECKPOINT, _code("structure")),
    "structure_multitask": StageReads(STRUCTURE_STAGES, STRUCTURE, MULTITASK_MODEL, _code("structure")),
    # retrains the run's architecture on subsets (its sections), verifies the checkpoint, kernels and kGLMs it reads
    "counterfactual": StageReads(COUNTERFACTUAL, COUNTERFACTUAL_READS, code=COUNTERFACTUAL_CODE),
    # sources: the poisoned set's name is looked up among them too (a bundled set has none)
    "poison": StageReads(FORENSICS, ("seed", "data", *POISONING, "sources"), code=FORENSICS_CODE),
    "poison_train": StageReads(FORENSICS, CHECKPOINT, ("data", *POISONING), FORENSICS_CODE),
    "poison_kernel": StageReads(FORENSICS, KERNEL, CHECKPOINT, FORENSICS_CODE),
    "poison_detect": StageReads(
        FORENSICS,
        ("seed", *KGLM_FIT, "poison.k", "poison.m", "poison.kinds", "poison.kglm_alpha"),
        KGLM_CHECKS,
        FORENSICS_CODE,
    ),
    # Prefect tasks' own stages: a part of a DVC stage's work, or of a flow's
    "load_checkpoint": StageReads("kernelscope.core.provenance", (), CHECKPOINT, _code(cli=False), dvc=False),
    "kernel_rows": StageReads(
        "kernelscope.kernels.stages",
        (*KERNEL, "scale.runner", "scale.dask_threads_per_worker"),
        CHECKPOINT,
        _code(cli=False),
        dvc=False,
    ),
    # kinds of another stage (the loss kernels) record that stage's section: KERNEL_SECTIONS
    "train_kglm": StageReads(SURROGATE, ("seed", "kglm"), (*KGLM_CHECKS, KERNEL_SECTIONS), TASK_SURROGATE, dvc=False),
    "evaluate": StageReads(SURROGATE, ("seed", "kglm"), (*KGLM_CHECKS, KERNEL_SECTIONS), TASK_SURROGATE, dvc=False),
    "compare_kernels": StageReads(SURROGATE, (), ("seed", KERNEL_OPTIONS), TASK_SURROGATE, dvc=False),
    "seed_models": StageReads("kernelscope.models.stages", CHECKPOINT, ("data",), _code(cli=False), dvc=False),
    "seed_run": StageReads(SURROGATE, ("data", *CHECKPOINT, *KERNEL, "kglm"), (), TASK_SURROGATE, dvc=False),
    "forensic_kglm": StageReads(
        FORENSICS, ("seed", *KGLM_FIT, "poison.kglm_alpha"), KGLM_CHECKS, TASK_FORENSICS, dvc=False
    ),
    "counterfactual_tasks": StageReads(  # the counterfactual flow's tasks: the stage's reads, spread by scale
        COUNTERFACTUAL,
        (*COUNTERFACTUAL_READS, "scale.runner", "scale.dask_threads_per_worker"),
        code=_code("counterfactual", "surrogate", cli=False),
        dvc=False,
    ),
    "multitask_sweep_cell": StageReads(SWEEP, ("seed", "multitask"), code=_code(cli=False), dvc=False),
    "multitask_sweep_report": StageReads(
        SWEEP,
        ("loss_kernel_sweep", "multitask.epsilon", "multitask.gamma", "multitask.nbeta"),
        code=_code(cli=False),
        dvc=False,
    ),
    "detect_poison": StageReads(
        FORENSICS, ("poison.k", "poison.m"), ("seed", KERNEL_OPTIONS), TASK_FORENSICS, dvc=False
    ),
}


def stage_reads(stage: str) -> StageReads:
    """The table entry of a stage, or a clear error naming the known stages."""
    try:
        return STAGES[stage]
    except KeyError:
        raise KernelscopeError(
            f"stage {stage!r} is not in core/stage_reads.py; declare it there (known: {', '.join(STAGES)})."
        ) from None


def structure_stage(subject: str) -> str:
    """The stage of a structure probe of ``subject``: a dataset's model, or the multitask one ('multitask')."""
    return "structure_multitask" if subject == "multitask" else "structure"


def declared(keys: tuple[str, ...]) -> dict[str, tuple[str, ...] | None]:
    """{section: its declared fields in order, or None for the whole section} of a list of keys."""
    out: dict[str, tuple[str, ...] | None] = {}
    for key in keys:
        section, _, field = key.partition(".")
        if not field:
            out[section] = None
        elif section not in out or out[section] is not None:
            out[section] = (*(out.get(section) or ()), field)
    return out


def stage_sections(params: Params, stage: str, dataset: str | None = None) -> dict[str, Any]:
    """The params a task of ``stage`` reads, as JSON (its cache key changes only when they do). ``sources`` holds
    only ``dataset``'s own source (empty for a bundled dataset), so editing another source reruns nothing."""
    dumped = params.model_dump(mode="json", exclude={"sources"})
    picked: dict[str, Any] = {}
    for section, fields in declared(stage_reads(stage).reads).items():
        if section == "sources":
            if dataset is None:
                raise KernelscopeError(
                    f"stage {stage!r} reads sources: pass stage_sections the dataset whose source it reads."
                )
            source = params.source(dataset)
            picked[section] = {dataset: source.model_dump(mode="json")} if source is not None else {}
        else:
            whole = dumped[section]
            picked[section] = whole if fields is None else {field: whole[field] for field in fields}
    return picked


def params_for(sections: dict[str, Any], stage: str) -> Params:
    """Params rebuilt from a task's ``sections``, as ``stage`` may read them: a section or key the stage does not
    declare, or one its flow did not send, raises a KernelscopeError naming both instead of taking the default.
    Sections sent but not declared are validated and never readable."""
    declares = declared(stage_reads(stage).reads)
    params = params_from_dict(sections, source=f"the sections of stage {stage!r}")
    views: dict[str, BaseModel] = {}
    for section, fields in declares.items():
        value = getattr(params, section)
        if isinstance(value, BaseModel) and isinstance(sections.get(section), dict):
            every = tuple(type(value).model_fields)
            allowed = frozenset(fields or every) & frozenset(sections[section])
            if allowed != frozenset(every):
                views[section] = guarded(value, Guard(stage, f"{section}.", allowed, frozenset(fields or every)))
    top = Guard(stage, "", frozenset(s for s in declares if s in sections), frozenset(declares))
    return guarded(params, top, **views)
