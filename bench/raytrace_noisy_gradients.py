"""Ray Tracing vs HMC with noisy gradients: docs/images/raytrace_noisy_gradients.png.

Target: ``N(0, 0.5² I)`` in 100 dimensions (a likelihood ``−1.5 |z|²`` on tengri's
``N(0, I)`` latent prior). Gradient noise: every component of ``∇ log L`` gets
Gaussian noise of standard deviation ``0.1 |∇ log L|``
(:func:`tengri.inference.methods.raytrace.with_gradient_noise`). No Metropolis
correction (the stochastic-gradient regime, where ``log L`` is not exact either),
16 DKD steps per transition, no in-trajectory refresh, 2000 draws after 200
discarded. Both samplers run through the same driver (``run_raytrace`` with
``sample_hmc`` False / True) at the same step sizes. Plotted: the mean sampled
variance over the true one. Also writes bench/out/raytrace_noisy_gradients.json.

    .venv/bin/python bench/raytrace_noisy_gradients.py
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import write_json  # noqa: E402

import tengri  # noqa: E402,F401
from tengri.inference.methods.raytrace import run_raytrace, with_gradient_noise  # noqa: E402
from tengri.inference.problem import Problem  # noqa: E402

DIM, SD = 100, 0.5
STEP_SIZES = [0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14]
RUN = {"n_warmup": 200, "n_samples": 2000, "n_steps_per_sample": 16, "refresh_rate": 0.0,
       "metropolis_check": False, "start": "init"}
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "images" / "raytrace_noisy_gradients.png"


def exact_log_likelihood(z, data_args):
    return -0.5 * jnp.sum(z * z) * (1.0 / data_args["sd"] ** 2 - 1.0)


def problem(log_likelihood) -> Problem:
    names = tuple(f"x{i}" for i in range(DIM))
    return Problem(names=names, log_likelihood=log_likelihood,
                   data_args={"sd": jnp.asarray(SD)}, to_physical=None, init=jnp.zeros(DIM))


def variance_ratio(prob: Problem, step_size: float, sample_hmc: bool) -> float:
    result = run_raytrace(prob, jax.random.PRNGKey(0), step_size=step_size,
                          sample_hmc=sample_hmc, **RUN)
    return float(np.mean(np.var(np.asarray(result.samples)[0], axis=0))) / SD**2


def main() -> None:
    problems = {"exact gradient": problem(exact_log_likelihood),
                "10% gradient noise": problem(with_gradient_noise(exact_log_likelihood, 0.1))}
    curves = {}
    for label, prob in problems.items():
        for sampler, hmc in (("Ray Tracing", False), ("HMC", True)):
            curves[f"{sampler}, {label}"] = [variance_ratio(prob, h, hmc) for h in STEP_SIZES]
            print(sampler, label, np.round(curves[f"{sampler}, {label}"], 3), flush=True)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {"Ray Tracing": ("C0", "o"), "HMC": ("C3", "s")}
    for name, ratios in curves.items():
        colour, marker = styles[name.split(",")[0]]
        dashed = "noise" in name
        ax.plot(STEP_SIZES, np.minimum(ratios, 1e3), color=colour, marker=marker,
                ls="--" if dashed else "-", mfc="none" if dashed else colour, label=name)
    ax.axhline(1.0, color="0.5", lw=0.8)
    top = 4.0
    for name, ratios in curves.items():
        for h, r in zip(STEP_SIZES, ratios):
            if r > top:   # trajectory ≈ half an orbit: HMC's noise heating diverges
                ax.annotate(f"{r:.0e}", (h, top), xytext=(0, -12), textcoords="offset points",
                            ha="center", fontsize=7, color="C3")
    ax.set_ylim(0.8, top)
    ax.set_xlabel("step size (travel time per step)")
    ax.set_ylabel("sampled / true variance")
    ax.set_title(f"N(0, {SD}² I), D = {DIM}, no Metropolis check", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    print(f"wrote {FIGURE}")
    write_json("raytrace_noisy_gradients", {"dim": DIM, "sd": SD, "step_sizes": STEP_SIZES,
                                            "run": RUN, "variance_ratio": curves})


if __name__ == "__main__":
    main()
