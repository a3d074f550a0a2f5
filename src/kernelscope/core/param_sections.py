"""The sections of params.yaml, one model each (every field with its default and description)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, model_validator

from kernelscope.core.param_types import (
    MAX_WIDTH,
    ArchName,
    BuiltinDataset,
    Float,
    Int,
    KernelKind,
    Section,
    StructureSubject,
    Width,
)


class DataParams(Section):
    test_fraction: Float = Field(
        0.3, gt=0.0, lt=1.0, description="Fraction of each class held out for testing (stratified)."
    )


class TrainParams(Section):
    """The MLP (the paper's MNIST2 model) and the architecture the attribution flow uses."""

    arch: ArchName = Field(
        "mlp",
        description="Model family of the attribution flow, a registry architecture: "
        "'mlp' (this section), 'cnn' or 'resnet' (their sections).",
    )
    hidden: tuple[Width, ...] = Field(
        (100, 100, 100), description=f"Hidden layer widths of the MLP (1 to {MAX_WIDTH})."
    )
    parameterization: Literal["ntk", "standard"] = Field(
        "ntk",
        description="'ntk': N(0,1) weights and activations divided by sqrt(fan-in) (the paper's MLP); "
        "'standard': PyTorch's default Linear.",
    )
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: Float = Field(0.5, gt=0.0, description="Learning rate.")
    momentum: Float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum.")
    batch_size: Int = Field(16, ge=1, description="Minibatch size.")
    epochs: Int = Field(200, ge=1, description="Passes over the training set.")


class CNNParams(Section):
    """The paper's small CNN (App. K.2.2), sized for 8×8 digits."""

    channels: tuple[Width, ...] = Field(
        (8, 16, 16, 32), min_length=2, description="Conv channels, in pairs per section (conv, strided conv)."
    )
    hidden: tuple[Width, ...] = Field((256, 256), description="Fully connected widths after the convolutions.")
    batch_norm: StrictBool = Field(True, description="BatchNorm after the first conv of each section.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: Float = Field(0.05, gt=0.0, description="Learning rate.")
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    batch_size: Int = Field(32, ge=1, description="Minibatch size.")
    epochs: Int = Field(30, ge=1, description="Passes over the training set.")


class KernelParams(Section):
    kinds: tuple[KernelKind, ...] = Field(
        ("trntk", "trntk0", "pntk", "proj_trntk", "proj_pntk", "ck", "em"),
        min_length=1,
        description="Kernels a run computes; each is its own artifact, task and DVC output.",
    )
    chunk_size: Int = Field(
        256, ge=1, le=65536, description="Rows per Gram block (query and training side), at most 65536."
    )
    memory_budget_mb: Int = Field(
        2048,
        ge=16,
        description="Peak memory of a kernel's assembly (MiB): the first plan whose held representations and "
        "featurization working set fit (every class held, one class at a time, chunks recomputed).",
    )
    projection_dim: Int = Field(
        2048,
        ge=1,
        le=1 << 20,
        description="K of the projected kernels (the paper uses 10240); at most the model's parameter count, and 2^20.",
    )
    projection: Literal["kron_hadamard", "gaussian", "rademacher"] = Field(
        "kron_hadamard",
        description="Random projection: Kronecker-structured subsampled Hadamard (fast) "
        "or dense Gaussian / Rademacher.",
    )
    em_layers: tuple[str, ...] | None = Field(
        None, description="Module names whose outputs form the embedding kernel; null: every hidden layer's activation."
    )
    storage: Literal["dense", "topk"] = Field(
        "dense",
        description="Kernel files: 'dense' (every entry) or 'topk' (each row's kernel.topk largest entries and the "
        "row's norm, for tens of thousands of training points; the kGLM fit and evaluation read it as a sparse "
        "matrix, forensic detection and explain rank nearest points among its entries; the kernel comparison's "
        "residual plots need 'dense').",
    )
    topk: Int = Field(256, ge=1, description="Entries kept per kernel row with storage 'topk'.")


class KGLMParams(Section):
    alpha: Float = Field(1e-4, gt=0.0, description="L2 regularization of the SGDClassifier.")
    max_iter: Int = Field(1000, ge=1, description="Epochs of SGD for the kGLM.")
    tol: Float = Field(1e-3, gt=0.0, description="Stopping tolerance of the kGLM.")
    target: Literal["labels", "nn"] = Field(
        "labels",
        description="Fit the kGLM to the ground-truth labels (the paper's default) "
        "or to the NN's own predictions (its App. I).",
    )
    standardize: StrictBool = Field(
        True,
        description="Fit on kernel columns scaled to zero mean and unit variance, folded back into W and b "
        "(false: the paper's raw fit; a top-k kernel's columns are scaled, not centred).",
    )
    stream_epochs: Int = Field(
        20,
        ge=1,
        description="SGD epochs when the dense train × train kernel is too large for kernel.memory_budget_mb and "
        "the kGLM is fit from row blocks read from disk.",
    )


class TableParams(Section):
    """The multi-seed faithfulness table (the paper's Table 1)."""

    n_models: Int = Field(5, ge=1, description="Independently seeded models per dataset and architecture.")
    archs: tuple[ArchName, ...] = Field(
        ("mlp", "cnn"), min_length=1, description="Model families in the table (registry architectures)."
    )
    kind: KernelKind = Field("trntk", description="Kernel of the table's surrogates.")


class PoisonParams(Section):
    """BadNets forensics (the paper's Table 3): poisoning, detection by nearest training points, trace-back."""

    dataset: BuiltinDataset = Field("digits10", description="Dataset to poison.")
    fraction: Float = Field(0.1, gt=0.0, lt=1.0, description="Fraction of training points stamped and relabelled.")
    target: Int = Field(0, ge=0, description="Label the trigger should force.")
    trigger_size: Int | None = Field(
        None, ge=1, description="Trigger side in pixels; null: Shan et al.'s 4/32 of the image side (at least 2)."
    )
    trigger_margin: Int | None = Field(
        None, ge=0, description="Pixels between trigger and image edge; null: floor(3/32 of the side)."
    )
    trigger_value: Float = Field(1.0, ge=0.0, le=1.0, description="Trigger intensity (1: opaque).")
    trigger_pattern: Literal["solid", "checker"] = Field("solid", description="Trigger pattern.")
    trigger_position: Literal["bottom-right", "top-left"] = Field("bottom-right", description="Trigger corner.")
    k: Int = Field(5, ge=1, description="Nearest training points examined per test point.")
    m: Int = Field(3, ge=1, description="Flag a test point when at least m of its k neighbours are poisoned.")
    kinds: tuple[KernelKind, ...] = Field(
        ("trntk", "proj_trntk", "proj_pntk", "ck", "em"), min_length=1, description="Kernels compared."
    )
    kglm_alpha: Float = Field(
        1e-2, gt=0.0, description="kGLM L2 regularization in the poison experiment (the paper: 1e-2)."
    )

    @model_validator(mode="after")
    def _m_within_k(self) -> PoisonParams:
        if self.m > self.k:
            raise ValueError(
                f"poison.m is {self.m} but poison.k is {self.k}, "
                "and no test point has more than k poisoned neighbours; set poison.m to at most poison.k"
            )
        return self


class ResNetParams(Section):
    """The registry's small ResNet for 32×32 images (three stages of basic blocks)."""

    widths: tuple[Width, ...] = Field(
        (16, 32, 64), min_length=1, description="Channels per stage; each stage after the first halves the map."
    )
    blocks: Int = Field(1, ge=1, description="Basic residual blocks per stage.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: Float = Field(0.05, gt=0.0, description="Learning rate.")
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    batch_size: Int = Field(64, ge=1, description="Minibatch size.")
    epochs: Int = Field(10, ge=1, description="Passes over the training set.")


class StructureParams(Section):
    """Structure probes: layer-Jacobian spectra, degeneracy, the interaction basis and the coordinate check."""

    subjects: tuple[StructureSubject, ...] = Field(
        ("digits2", "digits10", "multitask"),
        min_length=1,
        description="Models the main job probes: a dataset's attribution-run MLP, "
        "or 'multitask' (the multitask model).",
    )
    layers: dict[StructureSubject, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Per subject, the layers in forward order (module names, 'input', 'output'); "
        "missing: the input (if real-valued), every activation module and the logits.",
    )
    points: Int = Field(
        256, ge=2, description="Training points (seeded sample) for Jacobians, Gram matrices and the interaction basis."
    )
    chunk_size: Int = Field(64, ge=1, description="Points per Jacobian batch.")
    rank_rtol: Float = Field(
        1e-4, gt=0.0, lt=1.0, description="Singular values above rank_rtol × the largest count toward the rank."
    )
    mass: Float = Field(
        0.99, gt=0.0, le=1.0, description="Squared-mass fraction for the effective rank (count to this mass)."
    )
    gram_rtol: Float = Field(
        1e-8, gt=0.0, lt=1.0, description="Gram eigenvalues below gram_rtol × the largest are dropped when whitening."
    )
    ablation_steps: Int = Field(33, ge=2, description="Points on each ablation curve beyond the first 16 directions.")
    check_points: Int = Field(
        64, ge=2, description="Points for the coordinate check (each transform recomputes every spectrum)."
    )


class ScaleParams(Section):
    """How flows fan work out: per-kernel work, per-seed training and kernel row blocks."""

    runner: Literal["sequential", "threads", "dask"] = Field(
        "threads",
        description="'sequential': tasks one after another in the flow's process; "
        "'threads': Prefect's thread pool; "
        "'dask': Prefect's Dask task runner (prefect-dask) on a LocalCluster or the scheduler at dask_address.",
    )
    max_workers: Int = Field(2, ge=1, description="Tasks in flight at once with runner 'threads'.")
    dask_address: str | None = Field(
        None,
        description="Scheduler address of an existing Dask cluster (e.g. tcp://10.0.0.5:8786); "
        "null: start a LocalCluster. "
        "The environment variable KERNELSCOPE_DASK_ADDRESS overrides it.",
    )
    dask_workers: Int = Field(2, ge=1, description="Worker processes of the LocalCluster.")
    dask_threads_per_worker: Int = Field(
        1, ge=1, description="Threads per LocalCluster worker (and torch threads per task)."
    )
    row_tasks: Int = Field(
        1, ge=1, description="Tasks per kernel split: the query rows are cut into this many ranges of whole blocks."
    )
