"""What each artifact of a run must record, derived from params in one place.

The stage that writes an artifact stores these fields; every stage that reads it requires the same
fields computed from its own params. So a kernel of another projection, a kGLM of another alpha, a
checkpoint of another architecture or data split of another seed is refused instead of reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernelscope.core.artifacts import check_expected
from kernelscope.core.params import Params
from kernelscope.data.datasets import Dataset, read_dataset_with_meta
from kernelscope.models.checkpoint import Checkpoint, ModelSpec, load_checkpoint, require_finite_weights

# The multitask fields that shape the trained modular model (the rest are the sampler's).
MULTITASK_TRAINING_FIELDS = (
    "arch",
    "p",
    "train_fraction",
    "steps",
    "grokfast_alpha",
    "grokfast_lamb",
    "decay_fraction",
    "eval_every",
    "settle_steps",
    "threads",
    "lr",
    "weight_decay",
    "batch_size",
    "embed",
    "hidden",
    "heads",
)


def data_provenance(params: Params, dataset: str, data_seed: int | None = None) -> dict[str, Any]:
    """A data split's provenance: the dataset, the split's seed and test fraction, and the user's source if any.

    ``data_seed``: the seed the split was drawn with when it differs from the model's (the multi-seed
    table trains several seeds on one split).
    """
    source = params.source(dataset)
    return {
        "dataset": dataset,
        "seed": params.seed if data_seed is None else data_seed,
        "test_fraction": params.data.test_fraction,
        "source": source.data.model_dump(mode="json") if source is not None else None,
    }


def training_section(params: Params, dataset: str) -> tuple[str, Any]:
    """(registry architecture, its params section) that trains this dataset's model (kernelscope.models.zoo.MODELS)."""
    from kernelscope.models.zoo import model_entry

    source = params.source(dataset)
    if source is not None and source.model.registry:
        arch, field = source.model.registry, f"sources.{dataset}.model.registry"
    else:
        arch, field = params.train.arch, "train.arch"
    return arch, getattr(params, model_entry(arch, field).section)


def model_spec(params: Params, ds: Dataset) -> ModelSpec:
    """The model params say this dataset's checkpoint is: a registry architecture trained here,
    or the user's factory.
    """
    from kernelscope.models.zoo import architecture, build_model

    source = params.source(ds.name)
    if source is not None and source.model.factory:
        from kernelscope.models.user_models import build_from_factory

        spec_model = source.model
        arch = {"name": "factory", "factory": spec_model.factory, "kwargs": dict(spec_model.kwargs)}
        return ModelSpec(
            arch,
            spec_model.model_dump(mode="json"),
            params.seed,
            ds.dataset_hash,
            build=lambda: build_from_factory(spec_model.factory or "", spec_model.kwargs),
            bounded=False,
        )
    _, section = training_section(params, ds.name)
    arch = architecture(ds, section)
    return ModelSpec(
        arch, section.model_dump(mode="json"), params.seed, ds.dataset_hash, build=lambda: build_model(arch)
    )


def multitask_dataset_hash(params: Params) -> str:
    mp = params.multitask
    return f"modular-p{mp.p}-f{mp.train_fraction}-s{params.seed}"


def multitask_spec(params: Params) -> ModelSpec:
    """The multitask model params describe (its sampler settings do not shape it)."""
    from kernelscope.models.zoo import build_model

    mp = params.multitask
    arch = {"name": f"modular_{mp.arch}", "p": mp.p, "embed": mp.embed, "hidden": mp.hidden, "heads": mp.heads}
    dumped = mp.model_dump(mode="json", include=set(MULTITASK_TRAINING_FIELDS))  # a stage may read only these
    return ModelSpec(
        arch,
        {k: dumped[k] for k in MULTITASK_TRAINING_FIELDS},
        params.seed,
        multitask_dataset_hash(params),
        build=lambda: build_model(arch),
    )


POISONED_SUFFIX = "-badnets"  # kernelscope.forensics.poison.badnets names the poisoned set after the clean one
# The poison fields that shape the poisoned data (the rest are detection settings).
POISONING_FIELDS = (
    "dataset",
    "fraction",
    "target",
    "trigger_size",
    "trigger_margin",
    "trigger_value",
    "trigger_pattern",
    "trigger_position",
)


def poisoning(params: Params) -> dict[str, Any]:
    dumped = params.poison.model_dump(mode="json", include=set(POISONING_FIELDS))  # a stage may read only these
    return {k: dumped[k] for k in POISONING_FIELDS}


def run_data(params: Params, layout: Any, check_params: bool = False) -> Dataset:
    """The run's verified data; with ``check_params`` its provenance must also be what params would write
    (stages given the data and seed sections: train). Later stages rely on the hash chain instead: the
    checkpoint records the data's hash and every kernel the checkpoint's."""
    ds, meta = read_dataset_with_meta(layout.data_dir)
    if check_params:
        expect = data_provenance(params, ds.name, layout.data_seed)
        if ds.name.endswith(POISONED_SUFFIX):
            expect["poison"] = poisoning(params)
        check_expected(layout.data_dir / "train.parquet", meta, expect, "dataset-split")
    return ds


def run_checkpoint(params: Params, model_dir: Path, ds: Dataset) -> Checkpoint:
    """The run's checkpoint, verified against params and the data, with finite weights."""
    ckpt = load_checkpoint(model_dir, model_spec(params, ds))
    require_finite_weights(ckpt, model_dir)
    return ckpt


def run_model(params: Params, layout: Any) -> tuple[Dataset, Checkpoint]:
    """The run's verified data and checkpoint: what every stage after training starts from."""
    ds = run_data(params, layout)
    return ds, run_checkpoint(params, layout.model_dir, ds)


def kernel_provenance(params: Params, kind: str, checkpoint_hash: str, dataset_hash: str, split: str) -> dict[str, Any]:
    """A kernel file's provenance: the kind, its normalization, every option that shaped it, the model and the data."""
    from kernelscope.kernels.registry import kernel_kind

    sparse = {"storage": "topk", "topk": params.kernel.topk} if kernel_storage(params, kind) == "topk" else {}
    return {
        "kind": kind,
        "normalization": kernel_kind(kind).normalization,
        "split": split,
        **kernel_options(params, kind),
        **sparse,
        "checkpoint_hash": checkpoint_hash,
        "dataset_hash": dataset_hash,
    }


def kernel_storage(params: Params, kind: str) -> str:
    """How a kind's kernel files hold their rows: params.kernel.storage for the kernel stage's kinds; the loss
    kernels (written by their own stage) are always dense."""
    from kernelscope.kernels.registry import kernel_kind

    return params.kernel.storage if kernel_kind(kind).producer == "kernel" else "dense"


def kernel_options(params: Params, kind: str) -> dict[str, Any]:
    """The options that define a kernel of this kind (recorded as provenance and required on every read): the
    params.kernel keys its registry entry reads, the params sections it reads whole, then the seed if it draws one."""
    from kernelscope.kernels.registry import OPTION_NAMES, kernel_kind

    entry = kernel_kind(kind)
    options = {OPTION_NAMES.get(key, key): _option_value(getattr(params.kernel, key)) for key in entry.options}
    options.update({name: getattr(params, section).model_dump(mode="json") for name, section in entry.sections})
    if entry.seeded:
        options["seed"] = params.seed
    return options


def _option_value(value: Any) -> Any:
    # A list option is recorded as a list, an empty one as null: both mean the default (em: every hidden layer).
    return (list(value) or None) if isinstance(value, tuple) else value


def kernel_expect(params: Params, kind: str, checkpoint_hash: str, ds: Dataset, split: str) -> dict[str, Any]:
    """What a reader requires of a kernel file: its provenance and this run's training ids, in order."""
    return {
        **kernel_provenance(params, kind, checkpoint_hash, ds.dataset_hash, split),
        "train_ids": ds.train.ids.tolist(),
    }


def kglm_provenance(params: Params, kind: str, checkpoint_hash: str, dataset_hash: str) -> dict[str, Any]:
    """A kGLM's provenance: its kernel's (without the split) and every kglm setting that shaped the fit."""
    kernel = {
        k: v for k, v in kernel_provenance(params, kind, checkpoint_hash, dataset_hash, "train").items() if k != "split"
    }
    return {**kernel, "kglm": params.kglm.model_dump(mode="json"), "fit_seed": params.seed}
