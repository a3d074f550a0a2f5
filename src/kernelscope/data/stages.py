"""The data stage: a bundled data set or a user's source (params.sources), split and written as a verified
Parquet artifact.
"""

from __future__ import annotations

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import data_provenance
from kernelscope.core.results import StageResult
from kernelscope.data.datasets import make_digits, write_dataset


def data_stage(params: Params, dataset: str, layout: RunLayout) -> StageResult:
    """A bundled dataset, or a user's source (params.sources) read by kernelscope.data.readers, split and written
    as Parquet.
    """
    source = params.source(dataset)
    provenance = data_provenance(params, dataset, layout.data_seed)
    if source is None:
        ds = make_digits(dataset, params.data.test_fraction, provenance["seed"])
    else:
        from kernelscope.data.datasets import dataset_from_arrays
        from kernelscope.data.readers import read_source

        ds = dataset_from_arrays(
            dataset, read_source(source.data, seed=provenance["seed"]), params.data.test_fraction, provenance["seed"]
        )
    written = write_dataset(ds, layout.data_dir, provenance)
    summary = {**written, "n_train": len(ds.train.y), "n_test": len(ds.test.y), "n_classes": ds.n_classes}
    return StageResult.of(summary, [written["train"], written["test"]])
