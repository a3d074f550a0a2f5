"""The loss-kernel sections of params.yaml: the sampler, the per-dataset loss kernel, the multitask validation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, model_validator

from kernelscope.core.param_types import MAX_WIDTH, Float, Int, Section


class SGLDParams(Section):
    """The sampler settings shared by every loss-kernel run."""

    epsilon: Float = Field(1e-4, gt=0.0, description="SGLD step size ε.")
    gamma: Float = Field(1000.0, gt=0.0, description="Localization strength γ.")
    nbeta: Float | None = Field(
        None, gt=0.0, description="Inverse temperature nβ; null: m / ln m with m the minibatch size."
    )
    chains: Int = Field(4, ge=1, description="Independent chains, run vectorized.")
    draws: Int = Field(100, ge=2, description="Draws per chain.")
    burn_in: Int = Field(50, ge=0, description="Steps before the first draw.")
    steps_between: Int = Field(5, ge=1, description="Steps between draws.")
    divergence_retries: Int = Field(
        2,
        ge=0,
        description="When a chain diverges, restart every chain from w* at half the step size, at most this many "
        "times (each restart is a health warning naming the step size the draws used); 0: stop with an error.",
    )


class LossKernelParams(SGLDParams):
    """SGLD around the trained weights and the loss kernel (Adam, Furman, Hoogland 2025)."""

    batch_size: Int = Field(256, ge=1, description="SGLD minibatch size m.")
    threads: Int = Field(
        2,
        ge=1,
        description="Torch threads for SGLD, whatever the machine or runner: the draws are bit-reproducible for a "
        "seed and this count.",
    )
    center_chains: StrictBool = Field(False, description="Covariance within chains (each chain's mean removed first).")
    neighbours: Int = Field(10, ge=1, description="Neighbours under R for the label-agreement score.")
    umap: StrictBool = Field(True, description="Draw the UMAP map of 1 − R (umap-learn, seeded).")
    hierarchies: dict[str, str] = Field(
        {"digits10": "src/kernelscope/data/hierarchies/digits-shapes.yaml"},
        description="Per dataset, a YAML file of superclasses for the taxonomic lift "
        "(paths relative to the project root).",
    )


class MultitaskParams(SGLDParams):
    """The loss kernel's multitask validation: modular addition and division (p = 97) in one model."""

    arch: Literal["transformer", "mlp"] = Field(
        "transformer",
        description="'transformer': one attention layer and an MLP on tokens [a, b, task]; "
        "'mlp': embeddings concatenated, one hidden layer.",
    )
    p: Int = Field(97, ge=3, description="Prime modulus.")
    train_fraction: Float = Field(
        0.5, gt=0.0, lt=1.0, description="Fraction of all (a, b, task) triples used for training."
    )
    steps: Int = Field(6000, ge=1, description="AdamW steps (the model must grok both tasks).")
    grokfast_alpha: Float = Field(
        0.98, ge=0.0, lt=1.0, description="Grokfast's gradient moving-average momentum α (Lee et al. 2024)."
    )
    grokfast_lamb: Float = Field(
        2.0, ge=0.0, description="Grokfast's amplification λ of the slow gradient (0: plain AdamW)."
    )
    decay_fraction: Float = Field(
        0.25, ge=0.0, le=1.0, description="Last fraction of the steps over which the learning rate falls linearly to 0."
    )
    eval_every: Int = Field(
        250, ge=0, description="Steps between test-accuracy evaluations (the grokking curve; 0: none)."
    )
    settle_steps: Int = Field(
        500,
        ge=0,
        description="Once an evaluation sees both tasks grokked, this many more steps with the learning rate "
        "falling linearly to 0, then stop (steps is the budget); 0: train all steps. Needs eval_every > 0.",
    )
    threads: Int = Field(
        2,
        ge=1,
        description="Torch threads for training, whatever the machine or runner: the run is bit-reproducible "
        "for a seed and this count (another count sums in another order).",
    )
    lr: Float = Field(3e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: Float = Field(1.0, ge=0.0, description="AdamW weight decay (large: it drives generalization).")
    batch_size: Int = Field(1024, ge=1, description="Training minibatch size.")
    embed: Int = Field(
        128,
        ge=1,
        le=MAX_WIDTH,
        description="Embedding width of a, b and the task token (the transformer's model width).",
    )
    hidden: Int = Field(512, ge=1, le=MAX_WIDTH, description="Hidden width (of the transformer's MLP).")
    heads: Int = Field(4, ge=1, le=MAX_WIDTH, description="Attention heads of the transformer (must divide embed).")
    probes_per_task: Int = Field(200, ge=2, description="Probe points per task (seeded sample of the test split).")
    sgld_batch_size: Int = Field(256, ge=1, description="SGLD minibatch size m.")
    sgld_threads: Int = Field(
        2,
        ge=1,
        description="Torch threads for SGLD, whatever the machine or runner: the draws are bit-reproducible for a "
        "seed and this count (apart from threads, which shapes the model: changing this one needs no retraining).",
    )
    umap: StrictBool = Field(True, description="Draw the UMAP map of 1 − R (umap-learn, seeded).")
    # The sampler of this run, not SGLDParams' defaults: the setting that separates the tasks (README: it is narrow).
    gamma: Float = Field(1e4, gt=0.0, description="Localization strength γ.")
    nbeta: Float | None = Field(500.0, gt=0.0, description="Inverse temperature nβ; null: m / ln m.")
    draws: Int = Field(400, ge=2, description="Draws per chain.")
    burn_in: Int = Field(100, ge=0, description="Steps before the first draw.")
    steps_between: Int = Field(3, ge=1, description="Steps between draws.")

    @model_validator(mode="after")
    def _settling_needs_evaluations(self) -> MultitaskParams:
        if self.settle_steps and not self.eval_every:
            raise ValueError(
                f"multitask.settle_steps is {self.settle_steps} but multitask.eval_every is 0, and grokking is seen "
                "only at an evaluation; set eval_every above 0 or settle_steps to 0"
            )
        return self


class LossKernelSweepParams(Section):
    """The multitask sampler sweep (flow loss-kernel-sweep): task separation and sampler health over ε × γ × nβ for
    several training seeds; the rest of the sampler and the model come from the multitask section."""

    seeds: list[Int] = Field([0, 1, 2, 3, 4], min_length=1, description="Training seeds (one modular model each).")
    epsilon: list[Float] = Field([3e-5, 1e-4, 2e-4], min_length=1, description="SGLD step sizes ε of the grid.")
    gamma: list[Float] = Field([3e3, 1e4, 3e4], min_length=1, description="Localization strengths γ of the grid.")
    nbeta: list[Float] = Field([200.0, 500.0, 1000.0], min_length=1, description="Inverse temperatures nβ of the grid.")
    robust_auc: Float = Field(
        0.9, gt=0.5, le=1.0, description="A cell is robust when its task-separation AUC reaches this, with no warning."
    )
