"""Where a run's artifacts live: one root folder per dataset, with a subfolder per stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Where one dataset's artifacts live under a root folder."""

    root: Path
    shared_data: Path | None = None  # a data folder shared by several runs (multi-seed tables)
    data_seed: int | None = None  # the seed the shared split was drawn with, when it is not the model's

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.shared_data is not None:
            object.__setattr__(self, "shared_data", Path(self.shared_data))

    @classmethod
    def at(cls, outputs: str | Path, dataset: str) -> RunLayout:
        return cls(Path(outputs) / dataset)

    @property
    def data_dir(self) -> Path:
        return self.shared_data if self.shared_data is not None else self.root / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def checkpoint_hash(self) -> str:
        """The weights hash recorded in the checkpoint's verified sidecar (without loading the weights)."""
        from kernelscope.models.checkpoint import read_sidecar

        return str(read_sidecar(self.model_dir)["weights_sha256"])

    def kernel_dir(self, kind: str) -> Path:
        # A kind another stage writes (the loss kernels) lives with that stage's outputs, so stages that read
        # the NTK-family kernels (and DVC's view of kernels/) do not depend on it.
        from kernelscope.kernels.registry import kernel_kind

        producer = kernel_kind(kind).producer
        return (self.root if producer == "kernel" else self.root / producer) / "kernels" / kind

    def kernel_path(self, kind: str, split: str) -> Path:
        """split 'train': train × train; split 'test': test × train."""
        return self.kernel_dir(kind) / f"{split}.parquet"

    @property
    def comparison_dir(self) -> Path:
        return self.root / "comparison"

    def kglm_dir(self, kind: str) -> Path:
        return self.root / "kglm" / kind

    @property
    def counterfactual_dir(self) -> Path:
        return self.root / "counterfactual"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"
