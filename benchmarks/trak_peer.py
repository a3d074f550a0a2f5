"""TRAK against its peer (issue 16): kernelscope's ``trak`` attributor and the ``traker`` package (Park et al.'s
own), on the same models and projection dimension, scored by LDS on the same retrained models.

Both get the run's model and the same M − 1 extra full-data models (kernelscope.counterfactual.attributors.
trak_models), the margin f = z_y − logsumexp_{c≠y} z_c, K-dimensional projections (each its own random
projection: traker's BasicProjector, kernelscope's kernel.projection) and the same ridge λ relative to the
features' scale. The LDS
of each is computed against the run's retrained blocks (counterfactual.m models; trained here when missing).
Also reported: the mean per-query Spearman ρ between the two score matrices, and each one's seconds.

    .venv/bin/python benchmarks/trak_peer.py                     # digits10, params.yaml (m = 32)
    .venv/bin/python benchmarks/trak_peer.py --m 100 --models 5
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from kernels_bench import machine  # the script's folder is on sys.path
from scipy.stats import spearmanr

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import load_params
from kernelscope.core.provenance import run_model
from kernelscope.counterfactual import scores
from kernelscope.counterfactual.attributors import Run, trak_models
from kernelscope.counterfactual.datamodels import datamodels
from kernelscope.counterfactual.lds import bootstrap_mean, lds_per_query
from kernelscope.data.stages import data_stage
from kernelscope.models.stages import train_stage

RESULTS = Path(__file__).resolve().parent / "results"


def traker_scores(models: list[torch.nn.Module], run: Run, proj_dim: int, ridge: float, workdir: str) -> np.ndarray:
    """(n_test, N) TRAK scores from the traker package (its own featurize / score loop, float32, on the CPU).

    traker's projected features have another scale than kernelscope's (its projection is not scaled by
    1/sqrt(K)), so its absolute λ is set as kernelscope's: ``ridge`` × tr(XᵀX)/K of the first model's features.
    """
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    ds = run.dataset
    grad_dim = sum(p.numel() for p in models[0].parameters())
    projector = BasicProjector(
        grad_dim, proj_dim, seed=run.params.seed, proj_type=ProjectionType.rademacher, device="cpu"
    )
    traker = TRAKer(
        model=copy.deepcopy(models[0]),  # traker loads every checkpoint into this one module
        task="image_classification",
        train_set_size=len(ds.train.y),
        save_dir=workdir,
        device="cpu",
        projector=projector,
        proj_dim=proj_dim,
        use_half_precision=False,
        logging_level=40,
    )
    x_train, y_train = torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y)
    x_test, y_test = torch.from_numpy(ds.test.x), torch.from_numpy(ds.test.y)
    batch = 128
    for model_id, model in enumerate(models):
        traker.load_checkpoint(model.state_dict(), model_id=model_id)
        for start in range(0, len(x_train), batch):
            rows = slice(start, start + batch)
            traker.featurize(batch=(x_train[rows], y_train[rows]), num_samples=len(y_train[rows]))
    traker.saver.load_current_store(0)
    first = np.asarray(traker.saver.current_store["grads"], dtype=np.float64)  # (N, K) model 0's features
    traker.score_computer.lambda_reg = scores.trak_ridge(first, ridge)
    traker.finalize_features()
    for model_id, model in enumerate(models):
        traker.start_scoring_checkpoint("bench", model.state_dict(), model_id=model_id, num_targets=len(y_test))
        for start in range(0, len(x_test), batch):
            rows = slice(start, start + batch)
            traker.score(batch=(x_test[rows], y_test[rows]), num_samples=len(y_test[rows]))
    return np.asarray(traker.finalize_scores("bench"), dtype=np.float64).T  # traker: (N, n_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits10", choices=["digits10"], help="traker's margin needs C > 2")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--run", help="an existing run folder of the dataset (default: one made in a temp folder)")
    parser.add_argument("--m", type=int, help="counterfactual.m (default: the params file's)")
    parser.add_argument("--models", type=int, help="counterfactual.trak_models (default: the params file's)")
    parser.add_argument("--out", default=str(RESULTS / "trak_peer.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    params = load_params(args.params)
    cf = {k: v for k, v in (("m", args.m), ("trak_models", args.models)) if v is not None}
    params = params.model_copy(update={"counterfactual": params.counterfactual.model_copy(update=cf)})
    with tempfile.TemporaryDirectory(prefix="kernelscope-trak-peer-") as tmp:
        layout = RunLayout(Path(args.run)) if args.run else RunLayout.at(tmp, args.dataset)
        if not args.run:
            data_stage(params, args.dataset, layout)
            train_stage(params, layout, progress=False)
        ds, ckpt = run_model(params, layout)
        run = Run(params, layout, ds, ckpt)
        truth = datamodels(params, ds, layout.counterfactual_dir / "retrain", progress=True)
        models = trak_models(run)
        projector = run.projector()
        k = params.counterfactual.projection_dim

        start = time.perf_counter()
        per_model = []
        for model in models:
            test, train = run.gradients(model, projector)
            per_model.append((test.g, train.g, train.loss_scale))
        lam = scores.trak_ridge(per_model[0][1], params.counterfactual.trak_lambda)  # model 0's, for every model
        ridge = [lam / scores.trak_ridge(g, 1.0) for _, g, _ in per_model]  # as fractions of each model's own
        ours = np.mean([scores.trak_one_model(gq, gt, st, r) for (gq, gt, st), r in zip(per_model, ridge)], axis=0)
        ours_seconds = time.perf_counter() - start
        start = time.perf_counter()
        peer = traker_scores(models, run, k, params.counterfactual.trak_lambda, str(Path(tmp) / "traker"))
        peer_seconds = time.perf_counter() - start

    rows = {}
    for name, values, seconds in (("kernelscope", ours, ours_seconds), ("traker", peer, peer_seconds)):
        ci = bootstrap_mean(
            lds_per_query(values, truth.masks, truth.outputs), params.seed, params.counterfactual.bootstrap
        )
        rows[name] = {"lds": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "seconds": seconds}
    agreement = float(np.nanmean([spearmanr(ours[i], peer[i])[0] for i in range(len(ours))]))
    report = {
        "machine": machine(),
        "task": f"TRAK-{len(models)} on {args.dataset} (K = {k}, λ = {lam:.4g}), LDS over m = {truth.masks.shape[0]}",
        "attributors": rows,
        "lds_difference": rows["kernelscope"]["lds"] - rows["traker"]["lds"],
        "goal": "|LDS difference| <= 0.02",
        "mean_spearman_between_scores": agreement,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
