"""The modular-arithmetic multitask validation, on a tiny modulus."""

import json

import numpy as np
import pytest

from kernelscope.loss_kernel.multitask import ADD, DIV, make_multitask_data, task_contrast, task_separation


def test_modular_labels_are_right():
    d = make_multitask_data(7, 0.5, seed=0)
    a, b, task = d.x.T
    add, div = task == ADD, task == DIV
    assert add.sum() == 49 and div.sum() == 42  # b = 0 has no inverse
    assert np.all(d.y[add] == (a[add] + b[add]) % 7)
    assert np.all((d.y[div] * b[div]) % 7 == a[div] % 7)
    assert len(np.intersect1d(d.train, d.test)) == 0 and len(d.train) + len(d.test) == 91


def test_task_separation_on_constructed_losses():
    rng = np.random.default_rng(0)
    task = np.repeat([0, 1], 30)
    direction = np.where(task[:, None] == 0, 1.0, -1.0) * rng.normal(size=(1, 1, 40))[0]  # opposite responses per task
    losses = 1.0 + 0.5 * direction[:, None, :] + 0.05 * rng.normal(size=(60, 1, 40))
    out = task_separation(losses, np.ones(60), task)
    assert out["auc"] > 0.99
    shuffled = task_separation(1.0 + 0.05 * rng.normal(size=(60, 1, 40)), np.ones(60), task)
    assert shuffled["auc"] < 0.8


def test_task_contrast_by_hand_and_against_a_weak_block():
    # 4 probes, add = {0, 1}, div = {2, 3}: within-add pair 0.5, within-div pair 0.3, the four across pairs 0.1
    corr = np.array([[1, 0.5, 0.1, 0.1], [0.5, 1, 0.1, 0.1], [0.1, 0.1, 1, 0.3], [0.1, 0.1, 0.3, 1]])
    out = task_contrast(corr, np.array([ADD, ADD, DIV, DIV]), permutations=20)
    assert (out["within_add_corr"], out["within_div_corr"], out["across_corr"]) == pytest.approx((0.5, 0.3, 0.1))
    assert out["task_contrast"] == pytest.approx(0.3)
    # a block of within-task correlation 0.01 under noise of 0.05 per pair: invisible pair by pair, clear on average
    rng = np.random.default_rng(1)
    task = np.repeat([ADD, DIV], 100)
    noise = rng.normal(scale=0.05, size=(200, 200))
    corr = np.where(task[:, None] == task[None], 0.01, 0.0) + (noise + noise.T) / np.sqrt(2)
    np.fill_diagonal(corr, 1.0)
    out = task_contrast(corr, task)
    assert out["task_contrast"] == pytest.approx(0.01, abs=0.002) and out["task_contrast_z"] > 5
    shuffled = task_contrast(corr, rng.permutation(task))
    assert abs(shuffled["task_contrast_z"]) < 3


@pytest.mark.parametrize("arch", ["transformer", "mlp"])
def test_multitask_stages_end_to_end(tmp_path, arch):
    from kernelscope.core.params import params_from_dict
    from kernelscope.loss_kernel.multitask_stages import multitask_loss_stage, multitask_train_stage

    params = params_from_dict(
        {
            "multitask": {
                "arch": arch,
                "p": 7,
                "steps": 400,
                "eval_every": 100,
                "decay_fraction": 0.25,
                "nbeta": None,
                "gamma": 1000.0,
                "lr": 1e-2,
                "weight_decay": 0.0,
                "batch_size": 32,
                "embed": 8,
                "hidden": 16,
                "probes_per_task": 10,
                "chains": 2,
                "draws": 10,
                "burn_in": 5,
                "steps_between": 2,
                "sgld_batch_size": 16,
            }
        }
    )
    trained = multitask_train_stage(params, tmp_path).summary
    assert trained["train_add"] > 0.9 and trained["train_div"] > 0.9
    curve = json.loads((tmp_path / "training" / "curve.json").read_text())
    assert curve["steps"] == [100, 200, 300, 400] and curve["checkpoint_hash"] == trained["checkpoint_hash"]
    grokked = [a["test_add"] >= 0.99 and a["test_div"] >= 0.99 for a in curve["accuracies"]]
    expected = curve["steps"][grokked.index(True)] if any(grokked) else None
    assert curve["steps_to_grok"] == expected and trained["steps_to_grok"] == (expected and float(expected))
    assert curve["accuracies"][-1]["train_add"] == pytest.approx(trained["train_add"])
    assert (
        trained["plots"] == [str(tmp_path / "training" / "grokking.png")]
        and (tmp_path / "training" / "grokking.png").exists()
    )
    summary = multitask_loss_stage(params, tmp_path).summary
    # within one pair of the 10 × 10 add-div pairs (the file holds float32 losses)
    assert summary["task_auc"] == pytest.approx(_task_auc_of_written_losses(tmp_path, params), abs=0.011)
    assert np.isfinite(summary["llc"]) and np.isfinite(summary["task_contrast_z"])
    assert 0.0 <= summary["task_knn_purity"] <= 1.0 and -1.0 <= summary["umap_task_silhouette"] <= 1.0
    for name in ("correlation.png", "covariance_groups.png", "umap.png", "probe_losses.parquet", "summary.json"):
        assert (tmp_path / "loss_kernel" / name).exists(), name
    from kernelscope.core.provenance import multitask_spec
    from kernelscope.models.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "model", multitask_spec(params)).meta["architecture"]["name"] == f"modular_{arch}"


def _task_auc_of_written_losses(root, params) -> float:
    """The add-vs-div ROC-AUC of the first principal component of probe_losses.parquet's unit-normalized loss changes,
    recomputed with numpy's eigh and scipy's Mann-Whitney U (either orientation of the component)."""
    import pyarrow.parquet as pq
    from scipy.stats import mannwhitneyu

    table = pq.read_table(root / "loss_kernel" / "probe_losses.parquet")
    losses = np.stack(table.column("losses").to_numpy(zero_copy_only=False)).astype(np.float64)  # (n_probe, c · d)
    change = losses - table.column("loss_at_optimum").to_numpy()[:, None]
    change /= np.linalg.norm(change, axis=1, keepdims=True)
    change -= change.mean(axis=0)
    _, vectors = np.linalg.eigh(change.T @ change)
    pc1 = change @ vectors[:, -1]  # (n_probe,)
    mp = params.multitask
    task = make_multitask_data(mp.p, mp.train_fraction, params.seed).x[table.column("probe_id").to_numpy(), 2]
    u = mannwhitneyu(pc1[task == DIV], pc1[task == ADD]).statistic
    auc = u / ((task == DIV).sum() * (task == ADD).sum())
    return float(max(auc, 1 - auc))


def test_transformer_attention_against_a_loop():
    """The batched attention of MultitaskTransformer against one head, one point at a time, by hand."""
    import math

    import torch
    import torch.nn.functional as F

    from kernelscope.loss_kernel.multitask import MultitaskTransformer

    torch.manual_seed(0)
    model = MultitaskTransformer(7, d=8, heads=2, mlp=16).eval()
    x = torch.tensor([[1, 2, 0], [6, 3, 1], [0, 5, 1]])
    with torch.no_grad():
        got = model(x)
        for i, (a, b, t) in enumerate(x.tolist()):
            r = model.embed.weight[[a, b, 7 + t]] + model.pos  # (3, d)
            heads = []
            for h in range(2):
                cols = slice(4 * h, 4 * h + 4)
                q, k, v = model.q(r[-1])[cols], model.k(r)[:, cols], model.v(r)[:, cols]
                weights = torch.softmax(k @ q / math.sqrt(4), 0)  # (3,)
                heads.append(weights @ v)
            res = r[-1] + model.o(torch.cat(heads))
            expected = model.unembed(res + model.fc2(F.relu(model.fc1(res))))
            torch.testing.assert_close(got[i], expected)


def test_grokfast_filter_against_hand_computation():
    """h₁ = g₁, h_t = α h_{t−1} + (1 − α) g_t, and the gradient handed on is g_t + λ h_t."""
    import torch

    from kernelscope.loss_kernel.multitask import GrokfastEMA

    w = torch.nn.Parameter(torch.zeros(2))
    grokfast = GrokfastEMA([w], alpha=0.5, lamb=2.0)
    gradients = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0]), torch.tensor([-1.0, 4.0])]
    expected = [[3.0, -6.0], [3.0 + 2 * 2.0, 0.0 + 2 * -1.0], [-1.0 + 2 * 0.5, 4.0 + 2 * 1.5]]
    for g, want in zip(gradients, expected):
        w.grad = g.clone()
        grokfast.filter()
        torch.testing.assert_close(w.grad, torch.tensor(want))


def test_learning_rate_decays_linearly_over_the_last_fraction():
    from kernelscope.loss_kernel.multitask import learning_rate

    got = [learning_rate(step, 8, 1.0, 0.25) for step in range(8)]
    assert got == [1.0] * 6 + [1.0, 0.5]
    assert [learning_rate(step, 4, 0.1, 0.0) for step in range(4)] == [0.1] * 4


def test_multitask_training_is_bit_reproducible_on_two_threads():
    """Same seed, same thread count: the same bytes (the transformer's token tables go through F.embedding,
    whose backward does not depend on thread timing)."""
    import torch

    from kernelscope.loss_kernel.multitask import make_multitask_data, train_multitask

    data = make_multitask_data(7, 0.5, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [
            train_multitask(
                data,
                steps=60,
                lr=1e-2,
                weight_decay=1.0,
                batch_size=32,
                seed=3,
                embed=8,
                hidden=16,
                arch="transformer",
                heads=2,
                grokfast_lamb=2.0,
                decay_fraction=0.5,
                eval_every=20,
            )
            for _ in range(2)
        ]
    finally:
        torch.set_num_threads(threads)
    (first, acc, curve), (second, _, again) = runs
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert curve.steps == [20, 40, 60] and curve.accuracies == again.accuracies and curve.accuracies[-1] == acc


def test_settling_stops_a_fixed_number_of_steps_after_grokking(monkeypatch):
    """With every evaluation counting as grokked, the first one (step 20) starts the settling: training ends
    30 steps later whatever the budget, and the learning rate falls linearly to 0 over those steps."""
    import torch

    from kernelscope.loss_kernel import multitask

    monkeypatch.setattr(multitask, "GROKKED", 0.0)
    data = multitask.make_multitask_data(7, 0.5, seed=0)
    rates: list[float] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)

    def train(steps: int, settle: int):
        recipe = dict(lr=1e-2, weight_decay=1.0, batch_size=32, seed=3, embed=8, hidden=16, arch="mlp")
        return multitask.train_multitask(data, steps=steps, eval_every=20, settle_steps=settle, **recipe)

    short, _, curve = train(100, 30)
    assert curve.steps == [20, 40, 50]  # evaluations every 20 steps and at the last one
    assert rates[:20] == [1e-2] * 20
    assert rates[20:] == pytest.approx([1e-2 * (50 - s) / 30 for s in range(20, 50)])
    long, _, again = train(1000, 30)
    assert again.steps == curve.steps
    for (name, a), b in zip(short.state_dict().items(), long.state_dict().values()):
        assert torch.equal(a, b), name
    rates.clear()
    train(100, 0)
    assert len(rates) == 100  # settle_steps 0: the whole budget
    with pytest.raises(ValueError, match="eval_every"):
        multitask.train_multitask(data, steps=10, lr=1e-2, weight_decay=1.0, batch_size=8, seed=0, settle_steps=5)
