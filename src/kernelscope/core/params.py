"""Typed view of params.yaml: every tunable value of a run, validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from kernelscope.core.errors import ParamsError
from kernelscope.core.fileio import sha256_json

BuiltinDataset = Literal["digits2", "digits10"]
BUILTIN_DATASETS = ("digits2", "digits10")
# A bundled dataset or a key of params.sources (a user's own data); checked against sources by Params.
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
RESERVED_NAMES = ("multitask", "forensics", "table")  # folders of outputs/ that are not datasets


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "Input should be a number, not a boolean")
    return value


# Numbers that refuse booleans (pydantic's lax mode reads `epochs: true` as 1). Ints are strict: YAML
# ints pass, nothing else does. Floats stay lax otherwise: ints pass (`lr: 1`), and so do numeric
# strings, because YAML 1.1 reads `1e-3` (no dot) as the string '1e-3'.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
MAX_WIDTH = 65536  # no layer width in params can ask for more (a 65536² Linear is already 16 GiB in float32)
Width = Annotated[Int, Field(ge=1, le=MAX_WIDTH)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    test_fraction: Float = Field(0.3, gt=0.0, lt=1.0, description="Fraction of each class held out for testing (stratified).")


def _registered_arch(value: str) -> str:
    # Checked against the model registry when params are validated (imported then: the registry needs torch).
    from kernelscope.models.zoo import MODELS

    if value not in MODELS:
        names = [repr(name) for name in MODELS]
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise PydanticCustomError("model_arch", "Input should be {expected} (kernelscope.models.zoo.MODELS)",
                                  {"expected": expected})
    return value


ArchName = Annotated[str, Strict(), AfterValidator(_registered_arch)]  # a key of kernelscope.models.zoo.MODELS


class TrainParams(_Section):
    """The MLP (the paper's MNIST2 model) and the architecture the attribution flow uses."""

    arch: ArchName = Field("mlp", description="Model family of the attribution flow, a registry architecture: "
                                              "'mlp' (this section), 'cnn' or 'resnet' (their sections).")
    hidden: tuple[Width, ...] = Field((100, 100, 100), description=f"Hidden layer widths of the MLP (1 to {MAX_WIDTH}).")
    parameterization: Literal["ntk", "standard"] = Field(
        "ntk", description="'ntk': N(0,1) weights and activations divided by sqrt(fan-in) (the paper's MLP); 'standard': PyTorch's default Linear."
    )
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: Float = Field(0.5, gt=0.0, description="Learning rate.")
    momentum: Float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum.")
    batch_size: Int = Field(16, ge=1, description="Minibatch size.")
    epochs: Int = Field(200, ge=1, description="Passes over the training set.")


class CNNParams(_Section):
    """The paper's small CNN (App. K.2.2), sized for 8×8 digits."""

    channels: tuple[Width, ...] = Field((8, 16, 16, 32), min_length=2, description="Conv channels, in pairs per section (conv, strided conv).")
    hidden: tuple[Width, ...] = Field((256, 256), description="Fully connected widths after the convolutions.")
    batch_norm: StrictBool = Field(True, description="BatchNorm after the first conv of each section.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: Float = Field(0.05, gt=0.0, description="Learning rate.")
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    batch_size: Int = Field(32, ge=1, description="Minibatch size.")
    epochs: Int = Field(30, ge=1, description="Passes over the training set.")


def _registered_kind(value: str) -> str:
    # Checked against the registry when params are validated, so a kind registered at runtime counts.
    from kernelscope.kernels.registry import model_kinds

    kinds = model_kinds()
    if value not in kinds:
        # The wording of pydantic's Literal error, as before the kinds were registered.
        expected = ", ".join(repr(k) for k in kinds[:-1]) + f" or {kinds[-1]!r}"
        raise PydanticCustomError("kernel_kind", "Input should be {expected}", {"expected": expected})
    return value


KernelKind = Annotated[str, Strict(), AfterValidator(_registered_kind)]  # a kind of kernelscope.kernels.registry


class KernelParams(_Section):
    kinds: tuple[KernelKind, ...] = Field(
        ("trntk", "trntk0", "pntk", "proj_trntk", "proj_pntk", "ck", "em"), min_length=1,
        description="Kernels a run computes; each is its own artifact, task and DVC output.")
    chunk_size: Int = Field(256, ge=1, le=65536, description="Rows per Gram block (query and training side), at most 65536.")
    memory_budget_mb: Int = Field(2048, ge=16, description="Largest training-side representation or projection kept in memory (MiB).")
    projection_dim: Int = Field(2048, ge=1, le=1 << 20, description="K of the projected kernels (the paper uses 10240); at most the "
                                                                       "model's parameter count, and 2^20.")
    projection: Literal["kron_hadamard", "gaussian", "rademacher"] = Field(
        "kron_hadamard", description="Random projection: Kronecker-structured subsampled Hadamard (fast) or dense Gaussian / Rademacher.")
    em_layers: tuple[str, ...] | None = Field(
        None, description="Module names whose outputs form the embedding kernel; null: every hidden layer's activation.")


class KGLMParams(_Section):
    alpha: Float = Field(1e-4, gt=0.0, description="L2 regularization of the SGDClassifier.")
    max_iter: Int = Field(1000, ge=1, description="Epochs of SGD for the kGLM.")
    tol: Float = Field(1e-3, gt=0.0, description="Stopping tolerance of the kGLM.")
    target: Literal["labels", "nn"] = Field(
        "labels", description="Fit the kGLM to the ground-truth labels (the paper's default) or to the NN's own predictions (its App. I).")
    standardize: StrictBool = Field(
        True, description="Fit on kernel columns scaled to zero mean and unit variance, folded back into W and b (false: the paper's raw fit)."
    )


class TableParams(_Section):
    """The multi-seed faithfulness table (the paper's Table 1)."""

    n_models: Int = Field(5, ge=1, description="Independently seeded models per dataset and architecture.")
    archs: tuple[ArchName, ...] = Field(("mlp", "cnn"), min_length=1,
                                        description="Model families in the table (registry architectures).")
    kind: KernelKind = Field("trntk", description="Kernel of the table's surrogates.")


class PoisonParams(_Section):
    """BadNets forensics (the paper's Table 3): poisoning, detection by nearest training points, trace-back."""

    dataset: BuiltinDataset = Field("digits10", description="Dataset to poison.")
    fraction: Float = Field(0.1, gt=0.0, lt=1.0, description="Fraction of training points stamped and relabelled.")
    target: Int = Field(0, ge=0, description="Label the trigger should force.")
    trigger_size: Int | None = Field(None, ge=1, description="Trigger side in pixels; null: Shan et al.'s 4/32 of the image side (at least 2).")
    trigger_margin: Int | None = Field(None, ge=0, description="Pixels between trigger and image edge; null: floor(3/32 of the side).")
    trigger_value: Float = Field(1.0, ge=0.0, le=1.0, description="Trigger intensity (1: opaque).")
    trigger_pattern: Literal["solid", "checker"] = Field("solid", description="Trigger pattern.")
    trigger_position: Literal["bottom-right", "top-left"] = Field("bottom-right", description="Trigger corner.")
    k: Int = Field(5, ge=1, description="Nearest training points examined per test point.")
    m: Int = Field(3, ge=1, description="Flag a test point when at least m of its k neighbours are poisoned.")
    kinds: tuple[KernelKind, ...] = Field(("trntk", "proj_trntk", "proj_pntk", "ck", "em"), min_length=1, description="Kernels compared.")
    kglm_alpha: Float = Field(1e-2, gt=0.0, description="kGLM L2 regularization in the poison experiment (the paper: 1e-2).")

    @model_validator(mode="after")
    def _m_within_k(self) -> PoisonParams:
        if self.m > self.k:
            raise ValueError(f"poison.m is {self.m} but poison.k is {self.k}, and no test point has more than k poisoned neighbours; "
                             "set poison.m to at most poison.k")
        return self


class SGLDParams(_Section):
    """The sampler settings shared by every loss-kernel run."""

    epsilon: Float = Field(1e-4, gt=0.0, description="SGLD step size ε.")
    gamma: Float = Field(1000.0, gt=0.0, description="Localization strength γ.")
    nbeta: Float | None = Field(None, gt=0.0, description="Inverse temperature nβ; null: m / ln m with m the minibatch size.")
    chains: Int = Field(4, ge=1, description="Independent chains, run vectorized.")
    draws: Int = Field(100, ge=2, description="Draws per chain.")
    burn_in: Int = Field(50, ge=0, description="Steps before the first draw.")
    steps_between: Int = Field(5, ge=1, description="Steps between draws.")


class LossKernelParams(SGLDParams):
    """SGLD around the trained weights and the loss kernel (Adam, Furman, Hoogland 2025)."""

    batch_size: Int = Field(256, ge=1, description="SGLD minibatch size m.")
    center_chains: StrictBool = Field(False, description="Covariance within chains (each chain's mean removed first).")
    neighbours: Int = Field(10, ge=1, description="Neighbours under R for the label-agreement score.")
    umap: StrictBool = Field(True, description="Draw the UMAP map of 1 − R (umap-learn, seeded).")
    hierarchies: dict[str, str] = Field(
        {"digits10": "src/kernelscope/data/hierarchies/digits-shapes.yaml"},
        description="Per dataset, a YAML file of superclasses for the taxonomic lift (paths relative to the project root).")


class MultitaskParams(SGLDParams):
    """The loss kernel's multitask validation: modular addition and division (p = 97) in one model."""

    arch: Literal["transformer", "mlp"] = Field(
        "transformer", description="'transformer': one attention layer and an MLP on tokens [a, b, task]; 'mlp': embeddings concatenated, one hidden layer.")
    p: Int = Field(97, ge=3, description="Prime modulus.")
    train_fraction: Float = Field(0.5, gt=0.0, lt=1.0, description="Fraction of all (a, b, task) triples used for training.")
    steps: Int = Field(27000, ge=1, description="AdamW steps (the model must grok both tasks).")
    optimizer_restarts: tuple[Int, ...] = Field(
        (20000,), description="Steps at which AdamW starts again with fresh moments (the run that grokked both tasks restarted at 20000).")
    lr: Float = Field(1e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: Float = Field(1.0, ge=0.0, description="AdamW weight decay (large: it drives generalization).")
    batch_size: Int = Field(1024, ge=1, description="Training minibatch size.")
    embed: Int = Field(128, ge=1, le=MAX_WIDTH, description="Embedding width of a, b and the task token (the transformer's model width).")
    hidden: Int = Field(512, ge=1, le=MAX_WIDTH, description="Hidden width (of the transformer's MLP).")
    heads: Int = Field(4, ge=1, le=MAX_WIDTH, description="Attention heads of the transformer (must divide embed).")
    probes_per_task: Int = Field(200, ge=2, description="Probe points per task (seeded sample of the test split).")
    sgld_batch_size: Int = Field(256, ge=1, description="SGLD minibatch size m.")
    # The sampler of this run, not SGLDParams' defaults: the setting that separates the tasks (README: it is narrow).
    gamma: Float = Field(300.0, gt=0.0, description="Localization strength γ.")
    nbeta: Float | None = Field(500.0, gt=0.0, description="Inverse temperature nβ; null: m / ln m.")
    draws: Int = Field(400, ge=2, description="Draws per chain.")
    burn_in: Int = Field(100, ge=0, description="Steps before the first draw.")
    steps_between: Int = Field(3, ge=1, description="Steps between draws.")


def _registered_format(value: Any) -> str:
    # Checked against READERS when params are validated (imported then: the readers import this module).
    from kernelscope.data.readers import READERS

    if not isinstance(value, str) or value not in READERS:
        # The wording of pydantic's Literal error, as before the formats were registered.
        names = [repr(name) for name in READERS]
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


DataFormat = Annotated[str, BeforeValidator(_registered_format)]  # a key of kernelscope.data.readers.READERS


class DataSourceParams(_Section):
    """A user's data set: where it is and how to read it (kernelscope.data.readers). Read without unpickling."""

    format: DataFormat = Field(
        ..., description="'npz' (arrays x_key, y_key), 'parquet' (feature columns and a label column), 'image_folder' (one subfolder per "
                         "class, read with Pillow), 'cifar10' (the 'python version' batch folder), 'mnist1d' (regenerated by the mnist1d package).")
    path: str | None = Field(None, description="File or folder to read (not used by 'mnist1d').")
    x_key: str = Field("x", description="npz: the array of features, (n, ...) .")
    y_key: str = Field("y", description="npz: the array of integer labels, (n,).")
    label_column: str = Field("label", description="parquet: the integer label column.")
    feature_columns: tuple[str, ...] | None = Field(
        None, description="parquet: feature columns in order; null: a list column 'features', else every column but the label.")
    image_shape: tuple[Int, ...] | None = Field(
        None, description="(channels, height, width) of image features stored flat; null: read from the file if stored, else flat vectors.")
    image_size: tuple[Int, Int] | None = Field(None, description="image_folder: resize every image to (height, width); null: all must share one size.")
    grayscale: StrictBool = Field(False, description="image_folder and cifar10: convert to one channel.")
    n_classes: Int | None = Field(None, ge=2, description="Number of classes; labels must lie in [0, n_classes). null: max label + 1.")
    max_per_class: Int | None = Field(None, ge=1, description="Keep at most this many points per class (seeded), for a quick look at a large set.")
    mnist1d_samples: Int = Field(4000, ge=20, description="mnist1d: number of sequences to generate.")


class ModelSourceParams(_Section):
    """A user's model: an architecture of the registry trained here, or a factory and a weights file."""

    registry: ArchName | None = Field(
        None, description="Train this registry architecture here (sections train, cnn or resnet); null with a factory.")
    factory: str | None = Field(None, description="Import path 'package.module:function' returning an nn.Module (called with kwargs).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the factory.")
    weights: str | None = Field(None, description="Trained weights for the factory's model: .safetensors, or a PyTorch state dict "
                                                  "(.pt/.pth) read with torch.load(weights_only=True). Names and shapes must match exactly.")


class SourceParams(_Section):
    """A data set (and optionally a model) of the user's own, usable wherever a dataset name is."""

    data: DataSourceParams
    model: ModelSourceParams = Field(default_factory=ModelSourceParams, description="Default: train train.arch on the data here.")


class ResNetParams(_Section):
    """The registry's small ResNet for 32×32 images (three stages of basic blocks)."""

    widths: tuple[Width, ...] = Field((16, 32, 64), min_length=1, description="Channels per stage; each stage after the first halves the map.")
    blocks: Int = Field(1, ge=1, description="Basic residual blocks per stage.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimizer.")
    lr: Float = Field(0.05, gt=0.0, description="Learning rate.")
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    batch_size: Int = Field(64, ge=1, description="Minibatch size.")
    epochs: Int = Field(10, ge=1, description="Passes over the training set.")


StructureSubject = DatasetName  # a dataset's model, or 'multitask' (the multitask model)


class StructureParams(_Section):
    """Structure probes: layer-Jacobian spectra, degeneracy, the interaction basis and the coordinate check."""

    subjects: tuple[StructureSubject, ...] = Field(
        ("digits2", "digits10", "multitask"), min_length=1,
        description="Models the main job probes: a dataset's attribution-run MLP, or 'multitask' (the multitask model).")
    layers: dict[StructureSubject, tuple[str, ...]] = Field(
        default_factory=dict, description="Per subject, the layers in forward order (module names, 'input', 'output'); "
                                          "missing: the input (if real-valued), every activation module and the logits.")
    points: Int = Field(256, ge=2, description="Training points (seeded sample) for Jacobians, Gram matrices and the interaction basis.")
    chunk_size: Int = Field(64, ge=1, description="Points per Jacobian batch.")
    rank_rtol: Float = Field(1e-4, gt=0.0, lt=1.0, description="Singular values above rank_rtol × the largest count toward the rank.")
    mass: Float = Field(0.99, gt=0.0, le=1.0, description="Squared-mass fraction for the effective rank (count to this mass).")
    gram_rtol: Float = Field(1e-8, gt=0.0, lt=1.0, description="Gram eigenvalues below gram_rtol × the largest are dropped when whitening.")
    ablation_steps: Int = Field(33, ge=2, description="Points on each ablation curve beyond the first 16 directions.")
    check_points: Int = Field(64, ge=2, description="Points for the coordinate check (each transform recomputes every spectrum).")


class ScaleParams(_Section):
    """How flows fan work out: per-kernel work, per-seed training and kernel row blocks."""

    runner: Literal["sequential", "threads", "dask"] = Field(
        "threads", description="'sequential': tasks one after another in the flow's process; "
                               "'threads': Prefect's thread pool; "
                                  "'dask': Prefect's Dask task runner (prefect-dask) on a LocalCluster or the scheduler at dask_address.")
    max_workers: Int = Field(2, ge=1, description="Tasks in flight at once with runner 'threads'.")
    dask_address: str | None = Field(
        None, description="Scheduler address of an existing Dask cluster (e.g. tcp://10.0.0.5:8786); null: start a LocalCluster. "
                          "The environment variable KERNELSCOPE_DASK_ADDRESS overrides it.")
    dask_workers: Int = Field(2, ge=1, description="Worker processes of the LocalCluster.")
    dask_threads_per_worker: Int = Field(1, ge=1, description="Threads per LocalCluster worker (and torch threads per task).")
    row_tasks: Int = Field(1, ge=1, description="Tasks per kernel split: the query rows are cut into this many ranges of whole blocks.")


class Params(_Section):
    seed: Int = Field(0, ge=0, description="Seed of every random choice of a run.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks CUDA when present.")
    datasets: tuple[DatasetName, ...] = Field(("digits2", "digits10"), min_length=1, description="Datasets the main job runs.")
    outputs: str = Field("outputs/flows", description="Root folder of artifacts written by flows (DVC: outputs/dvc).")
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    cnn: CNNParams = CNNParams()
    kernel: KernelParams = KernelParams()
    kglm: KGLMParams = KGLMParams()
    table: TableParams = TableParams()
    poison: PoisonParams = PoisonParams()
    loss_kernel: LossKernelParams = LossKernelParams()
    multitask: MultitaskParams = MultitaskParams()
    structure: StructureParams = StructureParams()
    resnet: ResNetParams = ResNetParams()
    sources: dict[DatasetName, SourceParams] = Field(
        default_factory=dict, description="Users' own data sets (and models) by name; each name can be used wherever a dataset name is.")
    scale: ScaleParams = ScaleParams()


    @model_validator(mode="after")
    def _known_datasets(self) -> Params:
        clash = sorted(set(self.sources) & set(BUILTIN_DATASETS + RESERVED_NAMES))
        if clash:
            raise ValueError(f"sources: name {clash[0]!r} is taken by the project; rename that source")
        known = set(BUILTIN_DATASETS) | set(self.sources)
        for field, names in (("datasets", self.datasets), ("structure.subjects", tuple(s for s in self.structure.subjects if s != "multitask"))):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{field}: {unknown[0]!r} is neither a bundled dataset ({', '.join(BUILTIN_DATASETS)}) nor a key of "
                                 "sources; add it under sources or fix the name")
        for name, source in self.sources.items():
            model = source.model
            if model.factory and model.registry:
                raise ValueError(f"sources.{name}.model: give either registry (train here) or factory (with weights), not both")
            if model.factory and not model.weights:
                raise ValueError(f"sources.{name}.model.weights: a factory model needs its trained weights (.safetensors or .pt)")
            if model.weights and not model.factory:
                raise ValueError(f"sources.{name}.model.factory: weights need the factory that builds their model ('package.module:function')")
            if source.data.format != "mnist1d" and not source.data.path:
                raise ValueError(f"sources.{name}.data.path: format {source.data.format!r} reads a file or folder; set its path")
        return self

    def source(self, dataset: str) -> SourceParams | None:
        """The user's source behind a dataset name, or None for a bundled dataset."""
        return self.sources.get(dataset)


def params_hash(params: Params) -> str:
    """Short hash of every value that can change a result (not where outputs go or how work is spread):
    the same for a run from the UI, ``dvc repro`` or the CLI when their params agree."""
    return sha256_json(params.model_dump(mode="json", exclude={"outputs", "scale"}))[:16]


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    if not field or first["type"] == "value_error":  # a check across fields (a model validator): its message names them
        return f"{source}: {first['msg'].removeprefix('Value error, ')}; fix it in {source}."
    got = first.get("input")
    return f"{source}: field '{field}' is invalid ({first['msg']}; got {got!r}); fix it in {source}."


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found; run from the project root or pass --params PATH.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
                          "save the file as UTF-8.") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error.__class__.__name__}); fix the syntax.") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections; fix the file.")
    return params_from_dict(raw, source=str(path))
