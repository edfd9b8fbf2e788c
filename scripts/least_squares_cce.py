"""CCE for least squares: dense and sparse versions against the optimum and the paper's bound.

    python scripts/least_squares_cce.py --out results/figures/least_squares_cce.png

Data ``X`` (N x d1), targets ``Y`` (N x d2), sketch width ``k`` (METHODS.md, "Theory"):

* dense CCE: ``T = 0``; repeat: ``H = [T | G]`` with ``G`` a fresh d1 x k Gaussian,
  ``M = argmin ||X H M - Y||``, ``T = H M``. ``||X T - Y||`` never increases (``T`` stays in
  the span of ``H``) and tends to the least-squares optimum ``T*``, with
  ``||X T_t - Y||^2 <= (1 - rho)^(t k) ||X T*||^2 + ||X T* - Y||^2``,
  ``rho = sigma_min(X)^2 / ||X||_F^2``;
* sparse CCE: ``H = [S_g | S_h]`` where ``S_g`` is the one-hot matrix of the k-means clusters
  of ``T``'s rows (FAISS, as in the embedding method) and ``S_h`` that of a fresh random hash
  into ``k`` buckets; then ``M`` and ``T`` as above. The first step has no clusters yet:
  ``S_g`` is a second random hash, as CCE starts. Unlike the dense version it is not
  monotone: the new ``H`` holds only the clustered ``T``, not ``T`` itself.

Prints the squared residual per iteration (and the bound), writes the figure to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


@dataclass
class Problem:
    x: np.ndarray  # (N, d1)
    y: np.ndarray  # (N, d2)

    @property
    def optimum(self) -> np.ndarray:
        return np.linalg.lstsq(self.x, self.y, rcond=None)[0]

    def residual(self, t: np.ndarray) -> float:
        """``||X T - Y||_F^2``."""
        return float(np.linalg.norm(self.x @ t - self.y) ** 2)


def make_problem(n: int, d1: int, d2: int, clusters: int, noise: float, seed: int) -> Problem:
    """Inputs with a spread of scales; the true T has rows drawn from ``clusters`` centres, the
    structure that sparse CCE can find (dense CCE needs none)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) * np.linspace(0.3, 1.0, d1)
    centres = rng.normal(size=(clusters, d2))
    t_true = centres[rng.integers(0, clusters, size=d1)]
    return Problem(x, x @ t_true + noise * rng.normal(size=(n, d2)))


def solve_step(problem: Problem, h: np.ndarray) -> np.ndarray:
    """``T = H argmin_M ||X H M - Y||``."""
    m = np.linalg.lstsq(problem.x @ h, problem.y, rcond=None)[0]
    return h @ m


def dense_cce(problem: Problem, k: int, iterations: int, seed: int) -> list[float]:
    """Squared residuals ``||X T_t - Y||^2`` for t = 0..iterations."""
    rng = np.random.default_rng(seed)
    t = np.zeros((problem.x.shape[1], problem.y.shape[1]))
    out = [problem.residual(t)]
    for _ in range(iterations):
        t = solve_step(problem, np.hstack([t, rng.normal(size=(t.shape[0], k))]))
        out.append(problem.residual(t))
    return out


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[labels]


def sparse_cce(problem: Problem, k: int, iterations: int, seed: int) -> list[float]:
    """Squared residuals of sparse CCE (clusters of T's rows plus a fresh hash each step)."""
    from cce_dlrm.clustering import CentroidIndex, train_kmeans

    rng = np.random.default_rng(seed)
    d1 = problem.x.shape[1]
    t = np.zeros((d1, problem.y.shape[1]))
    out = [problem.residual(t)]
    for step in range(iterations):
        if step == 0:
            g = rng.integers(0, k, size=d1)
        else:
            km = train_kmeans(t.astype(np.float32), k, niter=25, seed=int(rng.integers(2**31 - 1)), gpu=None)
            g = CentroidIndex(km.centroids, gpu=None).search(t.astype(np.float32))[0]
        h = rng.integers(0, k, size=d1)
        t = solve_step(problem, np.hstack([one_hot(g, k), one_hot(h, k)]))
        out.append(problem.residual(t))
    return out


def paper_bound(problem: Problem, k: int, iterations: int) -> list[float]:
    """``(1 - rho)^(t k) ||X T*||^2 + ||X T* - Y||^2`` for t = 0..iterations."""
    singular = np.linalg.svd(problem.x, compute_uv=False)
    rho = singular[-1] ** 2 / (singular**2).sum()
    fitted = float(np.linalg.norm(problem.x @ problem.optimum) ** 2)
    best = problem.residual(problem.optimum)
    return [(1 - rho) ** (step * k) * fitted + best for step in range(iterations + 1)]


def plot(path: Path, dense: list[float], sparse: list[float], bound: list[float], best: float, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(len(dense))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, np.array(dense) - best, label="dense CCE")
    ax.plot(steps, np.array(sparse) - best, label="sparse CCE (k-means + hash)")
    ax.plot(steps, np.array(bound) - best, "--", label="bound (1-rho)^(tk) ||XT*||^2")
    ax.set_yscale("log")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("||X T_t - Y||^2 - ||X T* - Y||^2")
    ax.set_title(f"CCE for least squares (k = {k})")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="figure file (png, pdf, svg)")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--d1", type=int, default=40)
    parser.add_argument("--d2", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    problem = make_problem(args.n, args.d1, args.d2, args.clusters, args.noise, args.seed)
    best = problem.residual(problem.optimum)
    dense = dense_cce(problem, args.k, args.iterations, args.seed)
    sparse = sparse_cce(problem, args.k, args.iterations, args.seed)
    bound = paper_bound(problem, args.k, args.iterations)
    print(f"least squares optimum ||X T* - Y||^2 = {best:.4f}; start ||Y||^2 = {dense[0]:.1f}")
    print(f"{'t':>3} {'dense':>12} {'sparse':>12} {'bound':>12}")
    for step, (a, b, c) in enumerate(zip(dense, sparse, bound)):
        print(f"{step:>3} {a:>12.4f} {b:>12.4f} {c:>12.4f}")
    plot(args.out, dense, sparse, bound, best, args.k)
    print(f"figure: {args.out}")
    return {"optimum": best, "dense": dense, "sparse": sparse, "bound": bound}


if __name__ == "__main__":
    main()
