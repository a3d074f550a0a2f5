"""The counterfactual section of params.yaml (attributors, retraining on subsets, the LDS)."""

from __future__ import annotations

from pydantic import Field

from kernelscope.core.param_types import AttributorName, Float, Int, Section


class CounterfactualParams(Section):
    """Counterfactual evaluation: attributors, retraining on subsets (datamodels) and the LDS."""

    attributors: tuple[AttributorName, ...] = Field(
        ("trak", "tracin", "grad_dot", "grad_cos", "ekfac", "kglm:trntk", "kglm:pntk", "kernel:trntk", "kernel:em"),
        min_length=1,
        description="Attributors compared: trak, tracin, grad_dot, grad_cos, ekfac, kglm:<kind>, kernel:<kind>.",
    )
    m: Int = Field(
        32, ge=1, description="Training subsets drawn, one retrained model each (TRAK and dattri: 100; the benchmark)."
    )
    alpha: Float = Field(0.5, gt=0.0, lt=1.0, description="Fraction of the training set in each subset.")
    models_per_stack: Int = Field(
        32, ge=1, le=1024, description="Models trained at once in one stacked (vmap) step; also a cache block."
    )
    projection_dim: Int | None = Field(
        512,
        ge=1,
        le=1 << 20,
        description="K of the projected gradients of trak, tracin, grad_dot and grad_cos (kernel.projection's "
        "projection); null: exact gradients.",
    )
    trak_models: Int = Field(5, ge=1, description="Models TRAK averages over (TRAK-M): the run's and M − 1 more.")
    trak_lambda: Float = Field(
        0.1,
        ge=0.0,
        description="Ridge of TRAK's (ΦᵀΦ + λI)⁻¹ as a fraction of the mean eigenvalue tr(ΦᵀΦ)/K (0: pseudo-inverse).",
    )
    ekfac_damping: Float | None = Field(
        None,
        ge=0.0,
        description="λ of EK-FAC's (G + λI)⁻¹ (kronfluence's damping_factor); null: 0.1 × the mean eigenvalue.",
    )
    tracin_every: Int = Field(20, ge=1, description="TracIn-CP keeps a checkpoint every this many epochs.")
    bootstrap: Int = Field(1000, ge=10, description="Bootstrap resamples of the test points for the intervals.")
    brittleness_queries: Int = Field(
        5, ge=0, description="Correctly classified test points (seeded sample) for brittleness; 0: skip it."
    )
    brittleness_k: tuple[Int, ...] = Field(
        (40,), min_length=1, description="Training points removed per query (the curve's grid, e.g. [10, 40, 80])."
    )
    brittleness_seeds: Int = Field(1, ge=1, description="Retraining seeds per query and k.")
    mislabel_fraction: Float = Field(
        0.1, ge=0.0, lt=1.0, description="Training labels flipped (seeded) for mislabel detection; 0: skip it."
    )
