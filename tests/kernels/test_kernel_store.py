import numpy as np
import pytest

from kernelscope.core.errors import ArtifactError
from kernelscope.kernels.store import iter_kernel_blocks, read_kernel, write_kernel


def test_round_trip_across_row_groups(tmp_path):
    k = np.random.default_rng(0).normal(size=(37, 11))
    meta = write_kernel(
        tmp_path / "k.parquet", k, np.arange(100, 137), np.arange(11), {"kind": "trntk"}, rows_per_group=8
    )
    back, read_meta = read_kernel(tmp_path / "k.parquet", expect={"kind": "trntk"})
    np.testing.assert_array_equal(back, k.astype(np.float32))
    assert read_meta == meta and meta["orientation"] == "(query, train)"
    blocks = list(iter_kernel_blocks(tmp_path / "k.parquet"))
    assert len(blocks) == 5 and blocks[0][0][0] == 100


def test_provenance_mismatch_is_an_error(tmp_path):
    write_kernel(
        tmp_path / "k.parquet", np.eye(3), np.arange(3), np.arange(3), {"kind": "trntk", "checkpoint_hash": "a"}
    )
    with pytest.raises(ArtifactError, match="checkpoint_hash"):
        read_kernel(tmp_path / "k.parquet", expect={"checkpoint_hash": "b"})


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "k.parquet"
    write_kernel(path, np.eye(4), np.arange(4), np.arange(4), {"kind": "trntk"}, rows_per_group=2)
    before = path.read_bytes()
    import kernelscope.kernels.store as store

    real = store._row_group
    calls = {"n": 0}

    def fail_on_second_group(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed mid-write")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_row_group", fail_on_second_group)
    with pytest.raises(RuntimeError, match="mid-write"):
        write_kernel(path, 2 * np.eye(4), np.arange(4), np.arange(4), {"kind": "trntk"}, rows_per_group=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["k.parquet"]  # no temporary left behind


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        read_kernel(tmp_path / "absent.parquet")


def test_kernel_larger_than_a_block_streams_and_reads_back_exactly(tmp_path):
    import torch

    from kernelscope.kernels import compute_kernel, kernel_spec
    from kernelscope.kernels.assembly import kernel_row_blocks
    from kernelscope.kernels.store import write_kernel_blocks
    from kernelscope.models.zoo import build_mlp

    torch.manual_seed(0)
    model = build_mlp(6, [8], 3, "ntk").eval()
    xq, xt = torch.randn(23, 6), torch.randn(17, 6)
    spec = kernel_spec(model, "trntk")
    blocks = (
        (np.arange(23)[rows], block)
        for rows, block in kernel_row_blocks(spec, xq, xt, chunk_size=5, memory_budget_mb=1)  # held
    )
    write_kernel_blocks(tmp_path / "k.parquet", blocks, 23, np.arange(17), {"kind": "trntk"})
    back, meta = read_kernel(tmp_path / "k.parquet")
    assert len(list(iter_kernel_blocks(tmp_path / "k.parquet"))) == 5  # one row group per block of 5
    np.testing.assert_array_equal(
        back, compute_kernel(model, xq, xt, kind="trntk", chunk_size=5, memory_budget_mb=1).astype(np.float32)
    )


def test_short_stream_is_refused_and_leaves_nothing(tmp_path):
    from kernelscope.kernels.store import write_kernel_blocks

    blocks = [(np.arange(2), np.ones((2, 3)))]
    with pytest.raises(ValueError, match="2 rows were written"):
        write_kernel_blocks(tmp_path / "k.parquet", blocks, 4, np.arange(3), {"kind": "trntk"})
    assert list(tmp_path.iterdir()) == []
