"""Evidence for the loss family's value rules: what correct code feeds each loss, beside misuse.

    python benchmarks/loss_evidence.py      # every table: about 40 s on two CPU cores
    python benchmarks/loss_evidence.py 3 6  # questions 3 and 6 only

Each rule kl_guard may apply to cross_entropy, nll_loss and the binary
cross-entropies reads a few numbers of the live tensors: per-row minima,
maxima, sums and logsumexps in float32 over the rows a check samples (up to
32, fewer for a large class count), with the per-dtype tolerances of
``kl_guard._classify`` (5e-3 in float32, 2e-2 in half precision). This script
measures those numbers on inputs correct code produces and on each misuse, and
prints how far apart they are, per dtype, with the false-alarm probability per
row and per check. A rule ships only where that margin exists.

No weights are downloaded: heads are random-initialized ``nn.Linear``/MLP
heads on random features (each block of rows from a new head), a trained
classifier is simulated (logits = scale * onehot + noise), and the binary
models are trained here on synthetic data. Values computed in float32 are cast
to bfloat16 and float16, as a half-precision model's outputs would be rounded.

  1. cross_entropy given probabilities (softmax applied twice)
  2. nll_loss given probabilities or raw logits
  3. binary_cross_entropy_with_logits given sigmoid outputs
  4. binary_cross_entropy_with_logits targets outside [0, 1]
  5. binary_cross_entropy: what torch itself raises on
  6. cross_entropy soft targets: rows summing above 1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kl_guard._classify import lse_tolerance, norm_tolerance
from kl_guard._statistics import ELEMENT_BUDGET, rows_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAMPLE_ROWS = 32  # a check's default sample_rows
TARGET = 1e-6  # false alarms a rule may give per check
HEADS = 8  # fresh heads per generator: each makes 1/HEADS of the rows
WIDTH = 512  # feature width of the classification heads


def fmt(x: object) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x == 0 or math.isnan(x) or math.isinf(x):
            return str(x).replace("0.0", "0")
        return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.1e}"
    return str(x)


def show(
    title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = ()
) -> None:
    """Print a table: the first column left-aligned, the others right-aligned."""
    cells = [list(header)] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for j, row in enumerate(cells):
        line = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        print("  " + "  ".join(line))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for note in notes:
        print(f"  {note}")


def rows_needed(per_row: float) -> str:
    """How many rows a finding must read for ``per_row ** rows < TARGET``."""
    if per_row <= 0:
        return "1"
    if per_row >= 1:
        return "never"
    return str(math.ceil(math.log(TARGET) / math.log(per_row)))


def per_check(flags: Tensor, k: int) -> float:
    """Fraction of checks (``k`` consecutive rows each) in which every row is flagged."""
    usable = flags.numel() // k * k
    return float(flags[:usable].view(-1, k).all(1).float().mean()) if usable else math.nan


# 1 and 2: the class dimension -----------------------------------------------------------

Logits = Callable[[int, int], Tensor]  # (rows, classes) -> float32 logits [rows, classes]
CLASSES = {2: 65536, 3: 65536, 5: 65536, 10: 65536, 1000: 4096, 32000: 256}  # classes -> rows tried


def fresh(make: Callable[[int], nn.Module]) -> Logits:
    def logits(rows: int, classes: int) -> Tensor:
        blocks: list[Tensor] = [
            make(classes)(torch.randn(rows // HEADS, WIDTH)) for _ in range(HEADS)
        ]
        return torch.cat(blocks)

    return logits


linear_head = fresh(lambda c: nn.Linear(WIDTH, c))
mlp_head = fresh(lambda c: nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, c)))


def confident(scale: float, noise: float) -> Logits:
    """A trained classifier: the label's logit ``scale`` above the rest, plus noise."""

    def logits(rows: int, classes: int) -> Tensor:
        label = torch.randint(classes, (rows,))
        return scale * F.one_hot(label, classes).float() + noise * torch.randn(rows, classes)

    return logits


def label_smoothed(rows: int, classes: int) -> Tensor:
    """The optimum of label smoothing 0.1: the label's logit log((1 - e + e/C) / (e/C)) above."""
    gap = math.log((0.9 + 0.1 / classes) / (0.1 / classes))
    return confident(gap, 0.5)(rows, classes)


def cosine_similarities(rows: int, classes: int) -> Tensor:
    """CLIP-style logits without a temperature: batches of ``classes`` pairs of
    non-negative (post-ReLU) embeddings, so every similarity lies in [0, 1]."""
    blocks = []
    for _ in range(rows // classes):
        image = F.normalize(torch.randn(classes, 64).relu(), dim=1)
        text = F.normalize((image + 0.5 * torch.randn(classes, 64)).relu(), dim=1)
        blocks.append(image @ text.T)
    return torch.cat(blocks)


def probability_rows(x: Tensor, tol: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row of ``x`` read in float32: whether every value lies in [0, 1]; |row sum - 1|;
    KLG003's reading of probabilities (every value >= -tol, |sum - 1| <= tol); the strict
    one (every value in [0, 1], as softmax gives in every dtype, and |sum - 1| <= tol)."""
    v = x.float()
    lo, hi = v.amin(1), v.amax(1)
    unit = (lo >= 0) & (hi <= 1)
    off = (v.sum(1) - 1).abs()
    near = off <= tol
    return unit, off, (lo >= -tol) & near, unit & near


@dataclasses.dataclass
class Alarms:
    """False alarms of 'looks like probabilities' on correct rows, worst over the dtypes."""

    nearest: dict[str, float]  # dtype -> least |row sum - 1| of the rows in [0, 1]
    unit: float = 0.0  # share of rows with every value in [0, 1]
    loose: float = 0.0  # per row, KLG003's reading (values >= -tol)
    strict: float = 0.0  # per row, values in [0, 1]
    per_check: float = 0.0  # strict, every row of a check
    hits: int = 0  # strict, rows

    @property
    def rows_needed(self) -> str:
        return rows_needed(self.strict)


def alarms(logits: Tensor, classes: int) -> Alarms:
    out = Alarms(nearest={})
    k = rows_for(classes, SAMPLE_ROWS)
    for name, dtype in DTYPES.items():
        unit, off, loose, strict = probability_rows(logits.to(dtype), norm_tolerance(name))
        out.nearest[name] = float(off[unit].min()) if bool(unit.any()) else math.inf
        out.unit = max(out.unit, float(unit.float().mean()))
        out.loose = max(out.loose, float(loose.float().mean()))
        out.strict = max(out.strict, float(strict.float().mean()))
        out.hits = max(out.hits, int(strict.sum()))
        out.per_check = max(out.per_check, per_check(strict, k))
    return out


def q1_cross_entropy_input() -> None:
    generators: dict[str, Logits] = {
        "nn.Linear(512, C)": linear_head,
        "MLP 512-512-C": mlp_head,
        "Linear / T, T = 0.1": lambda r, c: linear_head(r, c) / 0.1,
        "Linear / T, T = 10": lambda r, c: linear_head(r, c) / 10,
        "Linear / T, T = 100": lambda r, c: linear_head(r, c) / 100,
        "log_softmax(Linear)": lambda r, c: F.log_softmax(linear_head(r, c), 1),
        "label smoothing 0.1 optimum": label_smoothed,
        "cosine sims, no temperature": cosine_similarities,
    }
    worst: dict[int, tuple[float, str]] = {}  # classes -> worst strict alarms/row, and where

    def note(classes: int, a: Alarms, name: str) -> None:
        if a.strict > worst.get(classes, (0.0, ""))[0]:
            worst[classes] = (a.strict, name)

    rows: list[list[object]] = []
    for name, make in generators.items():
        for classes, count in CLASSES.items():
            if make is cosine_similarities and classes > 1000:
                continue  # a [32000, 32000] similarity matrix: not a CPU benchmark
            a = alarms(make(count, classes), classes)
            note(classes, a, name)
            rows.append(
                [name, classes, count, rows_for(classes, SAMPLE_ROWS), a.unit]
                + [a.nearest[d] for d in DTYPES]
                + [a.loose, f"{a.hits}/{count}", a.per_check, a.rows_needed]
            )
    show(
        "1a. cross_entropy, correct inputs: how near do rows come to 'probabilities'?",
        ["logits", "C", "rows", "rows/check", "in [0,1]"]
        + [f"min|sum-1| {d}" for d in DTYPES]
        + ["alarms/row >=-tol", "alarms/row [0,1]", "alarms/check", "rows needed"],
        rows,
        [
            "in [0,1]: share of rows with every value in [0, 1]; min|sum-1|: the least"
            " |row sum - 1| among them (inf: none)",
            "alarms/row >=-tol: KLG003's reading (values >= -tol, |sum-1| <= tol: 5e-3 float32,"
            " 2e-2 half); [0,1]: values in [0, 1] too",
            "worst dtype; alarms/check: every row of a check alarmed ([0,1]); rows needed: rows a"
            " finding must read so that alarms/row ** rows < 1e-6",
        ],
    )

    scales = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    sweep = {2: 16384, 10: 16384, 1000: 1024, 32000: 64}
    rows = []
    for noise in (1.0, 0.1, 0.0):
        for scale in scales:
            cells: list[object] = [f"scale {scale:g}, noise {noise:g}"]
            for classes, count in sweep.items():
                a = alarms(confident(scale, noise)(count, classes), classes)
                if noise or scale != 1:
                    note(classes, a, f"scale {scale:g}, noise {noise:g}")
                cells.append(f"{fmt(min(a.nearest.values()))} / {fmt(a.strict)}")
            rows.append(cells)
    show(
        "1b. cross_entropy, a confident classifier's logits = scale * onehot + noise * N(0, 1)",
        ["logits"] + [f"C={c}: min|sum-1| / alarms/row" for c in sweep],
        rows,
        [
            "[0,1] reading, worst dtype; scale 1 with noise 0: one-hot rows used as logits (test"
            " code), exactly probabilities",
        ],
    )

    rows = []
    for classes in (2, 3):
        for spread in (0.01, 0.03, 0.1, 0.3, 0.577):
            a = alarms(1 / classes + spread * torch.randn(65536, classes), classes)
            rows.append(
                [f"N(1/C, {spread:g}^2) iid", classes, a.unit, f"{a.hits}/65536", a.strict]
                + [a.strict**SAMPLE_ROWS, a.rows_needed]
            )
    show(
        "1c. cross_entropy, the worst case for C = 2, 3: every logit near 1/C",
        ["logits", "C", "in [0,1]", "alarms", "alarms/row", "32 rows", "rows needed"],
        rows,
        [
            "no realistic head centres every logit on 1/C; zero weights with a bias of 1/C would",
            "repeat one row, and then no row count helps: identical rows carry one row's evidence",
        ],
    )

    rows = []
    caught = 1.0
    for name, make in (
        ("softmax(Linear)", linear_head),
        ("softmax(scale 10)", confident(10.0, 1.0)),
        ("softmax(scale 30)", confident(30.0, 1.0)),
    ):
        for classes, count in CLASSES.items():
            logits = make(count, classes)
            sums: list[object] = []
            one_hot: list[object] = []
            for dname, dtype in DTYPES.items():
                probs = F.softmax(logits.to(dtype), 1)
                _, off, _, strict = probability_rows(probs, norm_tolerance(dname))
                sums.append(float(off.max()))
                caught = min(caught, per_check(strict, rows_for(classes, SAMPLE_ROWS)))
                one_hot.append(float(((probs == 0) | (probs == 1)).all(1).float().mean()))
            rows.append([name, classes, *sums, *one_hot])
    show(
        "1d. cross_entropy misuse: softmax outputs (computed in each dtype) as the input",
        ["input", "C"]
        + [f"max|sum-1| {d}" for d in DTYPES]
        + [f"exact one-hot {d}" for d in DTYPES],
        rows,
        ["exact one-hot: share of rows of only 0s and 1s, as ambiguous as one-hot logits"],
    )
    print(f"  verdict: softmax outputs read as probabilities ([0,1]) in {caught:.3g} of checks;")
    for classes, (rate, name) in sorted(worst.items()):
        print(
            f"  C={classes}: worst correct alarms/row {rate:.2g} ({name}):"
            f" a finding needs {rows_needed(rate)} rows"
        )


def log_softmax(x: Tensor) -> Tensor:
    return F.log_softmax(x, 1)


def log_half_the_classes(x: Tensor) -> Tensor:
    """A part of a distribution: the log-probabilities of the first half of the classes."""
    return F.log_softmax(x, 1)[:, : max(x.shape[1] // 2, 1)]


def log_top_quarter(x: Tensor) -> Tensor:
    """log of probabilities renormalized over their top quarter: -inf elsewhere."""
    probs = F.softmax(x, 1)
    top = probs.topk(max(x.shape[1] // 4, 1), 1)
    kept = torch.zeros_like(probs).scatter(1, top.indices, top.values)
    return (kept / kept.sum(1, keepdim=True)).log()


def q2_nll_input() -> None:
    generators: dict[str, tuple[Logits, Callable[[Tensor], Tensor]]] = {
        "log_softmax(Linear)": (linear_head, log_softmax),
        "log_softmax(MLP)": (mlp_head, log_softmax),
        "log_softmax(scale 30)": (confident(30.0, 1.0), log_softmax),
        "log_softmax(Linear / 10)": (lambda r, c: linear_head(r, c) / 10, log_softmax),
        "log_softmax, half the classes": (linear_head, log_half_the_classes),
        "log(top quarter renormalized)": (linear_head, log_top_quarter),
    }
    rows: list[list[object]] = []
    nearest_zero, ratio = -math.inf, -math.inf  # over every row, generator and dtype
    for name, (make, finish) in generators.items():
        for classes, count in CLASSES.items():
            logits = make(count, classes)
            top, high_min, lse_ratio, as_probs, as_logits = -math.inf, -math.inf, -math.inf, 0, 0
            for dname, dtype in DTYPES.items():
                v = finish(logits.to(dtype)).float()  # computed in the dtype, read in float32
                tol, lse_tol = norm_tolerance(dname), lse_tolerance(dname, v.shape[1])
                lse = v.logsumexp(1)
                top = max(top, float(v.amax()))
                high_min = max(high_min, float(v.amin(1).max()))
                lse_ratio = max(lse_ratio, float(lse.max()) / lse_tol)
                as_probs += int(probability_rows(v, tol)[2].sum())
                as_logits += int(((v.amax(1) > tol) | (lse > lse_tol)).sum())
            nearest_zero, ratio = max(nearest_zero, high_min), max(ratio, lse_ratio)
            rows.append([name, classes, top, high_min, lse_ratio, as_probs, as_logits])
    show(
        "2a. nll_loss, correct inputs (log-probabilities computed in each dtype)",
        ["input", "C", "max value", "max row-min", "max lse/tol", "as probs", "as logits"],
        rows,
        [
            "max value: the largest value (log-probabilities are <= 0); max row-min: the row"
            " minimum nearest 0 (probabilities",
            "need every value >= -tol); max lse/tol: the largest logsumexp over its tolerance"
            " (raw logits exceed 1); as probs (KLG003's",
            "reading) / as logits (a value > tol, or logsumexp > its tolerance): rows, summed over"
            " the dtypes",
        ],
    )
    print(
        "  verdict: no correct row read as probabilities or logits; row minima"
        f" <= {nearest_zero:.3g}, logsumexp <= {ratio:.2g} x its tolerance"
    )

    rows = []
    for name, make in (
        ("Linear logits", linear_head),
        ("MLP logits", mlp_head),
        ("Linear logits - 3", lambda r, c: linear_head(r, c) - 3),
        ("scale 10 logits", confident(10.0, 1.0)),
    ):
        for classes, count in CLASSES.items():
            logits = make(count, classes)
            k = rows_for(classes, SAMPLE_ROWS)
            miss_row, miss_check = 0.0, 0.0
            for dname, dtype in DTYPES.items():
                v = logits.to(dtype).float()
                tol, lse_tol = norm_tolerance(dname), lse_tolerance(dname, classes)
                escapes = (v.amax(1) <= tol) & (v.logsumexp(1) <= lse_tol)
                miss_row = max(miss_row, float(escapes.float().mean()))
                miss_check = max(miss_check, per_check(escapes, k))
            rows.append([name, classes, miss_row, miss_check])
    show(
        "2b. nll_loss misuse: raw logits that pass for (parts of) log-probabilities",
        ["input", "C", "missed/row", "missed/check"],
        rows,
        [
            "missed: every value <= tol and logsumexp <= its tolerance, worst dtype (a part of a"
            " distribution, silent by KL's rules)",
            "probabilities as input: table 1d (the same test as cross_entropy's)",
        ],
    )


# 3: binary_cross_entropy_with_logits given sigmoid outputs ------------------------------


@dataclasses.dataclass(frozen=True)
class Elementwise:
    """Logits of a binary head: per head, a mixture of normals (weight, mean, std rows).

    ``squash`` is applied to the mixture: "tanh" for a tanh-bounded head,
    "uniform" replaces it with ``torch.rand`` (test code's logits).
    """

    name: str
    heads: Tensor  # [H, M, 3] float64
    squash: str = "none"

    def cdf(self, t: float) -> Tensor:
        """P(logit < t) per head."""
        if self.squash == "uniform":
            return torch.full(self.heads.shape[:1], min(max(t, 0.0), 1.0), dtype=torch.float64)
        if self.squash == "tanh":
            if t >= 1:
                return torch.ones(self.heads.shape[:1], dtype=torch.float64)
            if t <= -1:
                return torch.zeros(self.heads.shape[:1], dtype=torch.float64)
            t = math.atanh(t)
        w, mu, s = self.heads.unbind(-1)
        below: Tensor = (w * torch.special.ndtr((t - mu) / s)).sum(-1)
        return below

    def sample(self, trials: int, n: int) -> Tensor:
        """``trials`` batches of ``n`` logits, each batch from a head drawn at random."""
        if self.squash == "uniform":
            return torch.rand(trials, n, dtype=torch.float64)
        head = self.heads[torch.randint(self.heads.shape[0], (trials,))]  # [T, M, 3]
        part = torch.multinomial(head[..., 0], n, replacement=True)  # [T, n]
        mu, s = head[..., 1].gather(1, part), head[..., 2].gather(1, part)
        z = mu + s * torch.randn(trials, n, dtype=torch.float64)
        return z.tanh() if self.squash == "tanh" else z


def gaussian(name: str, mean: Tensor, std: Tensor, squash: str = "none") -> Elementwise:
    one = torch.stack((torch.ones_like(mean), mean, std), -1).unsqueeze(1)
    return Elementwise(name, one.double(), squash)


def mixture(name: str, parts: Sequence[tuple[float, float, float]]) -> Elementwise:
    return Elementwise(name, torch.tensor([parts], dtype=torch.float64))


def fresh_binary(prior: float | None, heads: int = 512, width: int = 256) -> tuple[Tensor, Tensor]:
    """Mean and std of a fresh ``nn.Linear(width, 1)``'s logit on N(0, I) features, per head:
    default init, or (``prior``) RetinaNet's: weights N(0, 0.01^2), bias log(p / (1 - p))."""
    means, stds = [], []
    for _ in range(heads):
        head = nn.Linear(width, 1)
        if prior is not None:
            nn.init.normal_(head.weight, std=0.01)
            nn.init.constant_(head.bias, math.log(prior / (1 - prior)))
        means.append(float(head.bias))
        stds.append(float(head.weight.norm()))
    return torch.tensor(means), torch.tensor(stds)


def binary_generators() -> list[Elementwise]:
    out = [gaussian("fresh nn.Linear(256, 1)", *fresh_binary(None))]
    for p in (0.01, 0.5, 0.6, 0.7):
        out.append(gaussian(f"prior p={p:g}, w ~ N(0, 0.01^2)", *fresh_binary(p)))
    out += [
        mixture("trained, mixed labels (+-2, sd 1)", [(0.5, 2.0, 1.0), (0.5, -2.0, 1.0)]),
        mixture("trained, mixed labels (+-4, sd 2)", [(0.5, 4.0, 2.0), (0.5, -4.0, 2.0)]),
        mixture("trained detector, 1% positive", [(0.99, -6.0, 2.0), (0.01, 4.0, 2.0)]),
        mixture("trained, all positive N(1, 0.5^2)", [(1.0, 1.0, 0.5)]),
        mixture("trained, all positive N(3, 1.5^2)", [(1.0, 3.0, 1.5)]),
        gaussian("tanh(fresh Linear)", *fresh_binary(None), squash="tanh"),
        gaussian(
            "tanh(N(3, 1.5^2)), all positive", torch.tensor([3.0]), torch.tensor([1.5]), "tanh"
        ),
        gaussian("torch.rand (test code)", torch.zeros(1), torch.ones(1), "uniform"),
    ]
    return out


@dataclasses.dataclass(frozen=True)
class Rule:
    """Report sigmoid outputs: every value read in [0, 1], not all equal, at least ``k`` within
    ``a`` of each wall (above 0: exact zeros are masking), and at least a share ``f`` of all
    values within ``a`` of either wall."""

    name: str
    a: float = 0.0
    k: int = 0
    f: float = 0.0

    def fires(self, x: Tensor) -> Tensor:
        """Per row of ``x`` (the values of one check, in their dtype)."""
        v = x.float()
        ok = (v.amin(-1) >= 0) & (v.amax(-1) <= 1) & (v.amin(-1) < v.amax(-1))
        if self.k == 0:
            return ok
        low = ((v > 0) & (v <= self.a)).sum(-1)
        high = (v >= 1 - self.a).sum(-1)
        share = (low + high) >= self.f * v.shape[-1]
        return ok & (low >= self.k) & (high >= self.k) & share

    def cells(self, g: Elementwise, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Per head: P(a logit lies in [0, 1] once rounded), P(in the low wall), P(high wall)."""
        eps = torch.finfo(dtype).eps
        below_one = eps / 2  # the spacing just below 1
        # the least logit that rounds to a value >= 1 - a, and the least that rounds above 1
        high_from = math.ceil((1 - self.a) / below_one) * below_one - below_one / 2
        above_from = 1 + eps / 2
        inside = g.cdf(above_from) - g.cdf(0.0)
        low = g.cdf(self.a) - g.cdf(0.0)
        high = g.cdf(above_from) - g.cdf(high_from)
        return inside, low, high

    def alarm(self, g: Elementwise, n: int, dtype: torch.dtype) -> Tensor:
        """Per head of ``g``, P(the rule fires on ``n`` of its logits): exact for k = 0, else a
        bound: Chernoff on each wall (a multinomial's counts are negatively associated, so the
        product bounds both), or on the share, whichever is less."""
        inside, low, high = self.cells(g, dtype)
        p = inside.clamp_min(1e-300) ** n
        if self.k:
            low, high = low / inside, high / inside
            walls = tail(n, low, self.k) * tail(n, high, self.k)
            share = tail(n, low + high, max(self.k, math.ceil(self.f * n)))
            p = p * torch.minimum(walls, share)
        return p.nan_to_num(0.0)


def tail(n: int, p: Tensor, k: int) -> Tensor:
    """Chernoff bound on P(Binomial(n, p) >= k)."""
    if k > n:
        return torch.zeros_like(p)
    q = k / n
    p = p.clamp(1e-300, 1 - 1e-16)
    entropy = q * math.log(q) + ((1 - q) * math.log(1 - q) if q < 1 else 0.0)
    kl = entropy - q * torch.log(p) - (1 - q) * torch.log1p(-p)
    return torch.where(p >= q, torch.ones_like(p), torch.exp(-n * kl))


RULES = (
    Rule("all in [0,1]"),
    Rule("+ min<=0.05, max>=0.95", a=0.05, k=1),
    Rule("+ 4 within 1e-2 of each wall", a=1e-2, k=4),
    Rule("+ 4 within 1e-3 of each wall", a=1e-3, k=4),
    Rule("+ 4 each, 1% within 1e-3", a=1e-3, k=4, f=0.01),
    Rule("+ 4 each, 5% within 1e-3", a=1e-3, k=4, f=0.05),
)
SIZES = (1, 4, 16, 64, 256, 1024, 4096)


def worst_families() -> list[Elementwise]:
    """Every normal (mean, std) on a grid, and tanh of every normal: one head each."""
    mu, s = torch.meshgrid(
        torch.linspace(-1, 2, 301, dtype=torch.float64),
        torch.logspace(-3, 1, 81, dtype=torch.float64),
        indexing="ij",
    )
    tmu, ts = torch.meshgrid(
        torch.linspace(-2, 6, 161, dtype=torch.float64),
        torch.logspace(-2, 1, 61, dtype=torch.float64),
        indexing="ij",
    )
    return [
        gaussian("any normal (worst)", mu.flatten(), s.flatten()),
        gaussian("tanh of any normal (worst)", tmu.flatten(), ts.flatten(), "tanh"),
    ]


def train_binary(*, misuse: bool, prior: float | None, steps: int = 4096) -> dict[int, Tensor]:
    """What reaches binary_cross_entropy_with_logits at steps 1, 2, 4, ... of a small multi-label
    MLP trained with Adam (lr 1e-3, batch 128 x 8 labels, prevalence ~0.3):
    the logits, or with ``misuse`` their sigmoid."""
    torch.manual_seed(0)
    teacher = torch.randn(32, 8)
    head = nn.Linear(64, 8)
    if prior is not None:
        nn.init.normal_(head.weight, std=0.01)
        nn.init.constant_(head.bias, math.log(prior / (1 - prior)))
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), head)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen: dict[int, Tensor] = {}
    with torch.enable_grad():
        for step in range(1, steps + 1):
            x = torch.randn(128, 32)
            y = ((x @ teacher) / math.sqrt(32) + 0.3 * torch.randn(128, 8) > 0.5).float()
            out = model(x)
            given = out.sigmoid() if misuse else out
            loss = F.binary_cross_entropy_with_logits(given, y)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if step & (step - 1) == 0:
                seen[step] = given.detach().flatten()
    return seen


def wall_share(v: Tensor, a: float) -> float:
    """Share of the values of ``v`` within ``a`` of 0 (not 0 itself) or of 1."""
    return float((((v > 0) & (v <= a)) | ((v >= 1 - a) & (v <= 1))).double().mean())


def q3_sigmoid_into_bce_with_logits() -> None:
    generators = binary_generators()
    runs = {
        "misuse, default init": train_binary(misuse=True, prior=None),
        "misuse, prior p=0.01": train_binary(misuse=True, prior=0.01),
        "correct, default init": train_binary(misuse=False, prior=None),
        "correct, prior p=0.6": train_binary(misuse=False, prior=0.6),
        "correct, prior p=0.01": train_binary(misuse=False, prior=0.01),
    }
    rows: list[list[object]] = []
    for g in generators:
        inside = g.cdf(1.0) - g.cdf(0.0)  # exactly 0 and 1 have probability 0
        rows.append([g.name] + [float((inside**n).mean()) for n in SIZES])
    rows.append(["zero-initialized head (all 0)"] + [0.0] * len(SIZES))
    rows.append(["zero weights, prior p=0.6 (all 0.405)"] + [1.0] * len(SIZES))
    show(
        "3a. binary_cross_entropy_with_logits, correct logits: P(all n logits in (0, 1))",
        ["logits"] + [f"n={n}" for n in SIZES],
        rows,
        [
            "fresh heads on N(0, I) features of width 256 (512 heads averaged: the elements of a"
            " batch share their head); exact for these normals",
            "zero-initialized heads give n equal values: 0 (outside (0, 1)) or the prior's bias"
            " (inside, at every n)",
        ],
    )

    rows = []
    n = 1024
    for g in generators:
        z = g.sample(200, n)
        s = z.sigmoid()
        rows.append(
            [
                g.name,
                float((z.amax(1) - z.amin(1)).median()),
                float(z.std(1).median()),
                float(((z.amin(1) >= 0) & (z.amax(1) <= 1)).double().mean()),
                float((s.amax(1) - s.amin(1)).median()),
                float(s.std(1).median()),
                wall_share(s, 1e-3),
            ]
        )
    for step in (64, 512, 1024, 4096):
        s = runs["misuse, default init"][step].double()
        spread = float(s.amax() - s.amin())
        rows.append([f"misuse-trained MLP, step {step}", "-", "-", "-", spread, float(s.std())])
        rows[-1].append(wall_share(s, 1e-3))
    show(
        f"3b. spread of n = {n} logits versus their sigmoid (medians over 200 batches)",
        ["generator", "logits max-min", "logits std", "all in [0,1]"]
        + ["sigmoid max-min", "sigmoid std", "sigmoid within 1e-3 of 0 or 1"],
        rows,
        [
            "all in [0,1]: share of the 200 batches; misuse-trained: the MLP of 3e trained with"
            " its sigmoid outputs as logits (those outputs)",
        ],
    )

    worst = worst_families()
    checks = (16, 64, 1024, ELEMENT_BUDGET)
    correct, uniform = generators[:-1], generators[-1]
    rows = []
    for rule in RULES:
        for dname, dtype in DTYPES.items():
            cells: list[object] = [rule.name, dname]
            cells += [max(float(rule.alarm(g, n, dtype).mean()) for g in correct) for n in checks]
            cells += [max(float(rule.alarm(w, n, dtype).max()) for n in checks) for w in worst]
            cells.append(max(float(rule.alarm(uniform, n, dtype).mean()) for n in checks))
            rows.append(cells)
    show(
        "3c. false alarms per check of candidate rules (correct logits read as sigmoid outputs)",
        ["rule", "dtype"]
        + [f"generators n={n}" for n in checks]
        + ["any normal", "tanh(any normal)", "torch.rand"],
        rows,
        [
            "generators: the worst of 3a's but torch.rand; the last three columns: the worst over"
            f" n in {checks}",
            "exact for 'all in [0,1]', else Chernoff bounds; any normal: every mean in [-1, 2],"
            " std in [1e-3, 10]; tanh: every mean in [-2, 6], std in [1e-2, 10]",
            "every rule but the first needs 'not all equal', so zero-initialized heads never fire",
        ],
    )

    rows = []
    for g in generators:
        if g.squash != "none":
            continue
        for n in (64, 1024, 16384):
            s = g.sample(200, n).sigmoid()
            cells = [f"sigmoid({g.name})", n]
            for rule in RULES[1:]:
                fired = [float(rule.fires(s.to(d)).float().mean()) for d in DTYPES.values()]
                cells.append(min(fired))
            rows.append(cells)
    show(
        "3d. misuse caught: sigmoid outputs as the logits (share of 200 checks, worst dtype)",
        ["input", "n"] + [r.name for r in RULES[1:]],
        rows,
        ["'all in [0,1]' catches each of them, and the correct logits of 3a as often as 3a says"],
    )

    rows = []
    for name, seen in runs.items():
        misuse = name.startswith("misuse")
        for rule in RULES:
            # the catch in every dtype for a misuse; a false alarm in any dtype otherwise
            fired = [
                step
                for step, v in seen.items()
                if (all if misuse else any)(bool(rule.fires(v.to(d))) for d in DTYPES.values())
            ]
            rows.append(
                [name, rule.name, fired[0] if fired else "never", f"{len(fired)}/{len(seen)}"]
            )
    show(
        "3e. a 32-64-8 MLP trained 4096 steps with Adam: steps 1, 2, 4, ..., 4096 at which each"
        " rule fires on the call's 1024 values",
        ["run", "rule", "first step", "steps fired"],
        rows,
        [
            "misuse runs: fired in every dtype (the catch); correct runs: in any dtype (a false"
            " alarm)",
        ],
    )


# 4, 5, 6: targets --------------------------------------------------------------------------


def discs(count: int, size: int) -> Tensor:
    """``count`` binary masks [count, 1, size, size], one random disc each."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(count, 2, 1, 1) * size
    radius = torch.rand(count, 1, 1) * size / 3 + 3
    inside = (yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2 < radius**2
    return inside.float().unsqueeze(1)


RESIZES: dict[str, tuple[int, dict[str, object]]] = {
    "nearest, 64 -> 97": (97, {"mode": "nearest"}),
    "bilinear, 64 -> 97": (97, {"mode": "bilinear"}),
    "bilinear aligned, 64 -> 97": (97, {"mode": "bilinear", "align_corners": True}),
    "bilinear antialias, 64 -> 23": (23, {"mode": "bilinear", "antialias": True}),
    "area, 64 -> 23": (23, {"mode": "area"}),
    "bicubic, 64 -> 97": (97, {"mode": "bicubic"}),
    "bicubic antialias, 64 -> 23": (23, {"mode": "bicubic", "antialias": True}),
}


def resize(masks: Tensor, how: str) -> Tensor | str:
    size, options = RESIZES[how]
    try:
        return F.interpolate(masks, size=size, **options)  # type: ignore[arg-type]
    except RuntimeError as error:  # a mode this dtype lacks on CPU
        return f"n/a ({str(error)[:24]})"


def binary_targets(dtype: torch.dtype) -> dict[str, tuple[bool, Tensor | str]]:
    """BCE targets in ``dtype``, each marked correct (True) or a misuse."""
    torch.manual_seed(4)
    masks = discs(64, 64).to(dtype)
    labels = (torch.rand(4096) < 0.3).to(dtype)
    out: dict[str, tuple[bool, Tensor | str]] = {
        "labels {0, 1}": (True, labels),
        "label smoothing 0.1": (True, labels * 0.9 + 0.05),
        "soft IoU targets": (True, torch.rand(4096).to(dtype)),
        "teacher sigmoid": (True, (4 * torch.randn(4096)).to(dtype).sigmoid()),
        "mixup of masks": (True, 0.3 * masks + 0.7 * masks.flip(0)),
    }
    for how in RESIZES:
        out[f"mask {how}"] = (True, resize(masks, how))
    out["labels {-1, 1}"] = (False, labels * 2 - 1)
    out["masks {0, 255}"] = (False, masks * 255)
    for how in ("bilinear, 64 -> 97", "area, 64 -> 23"):
        out[f"masks {{0, 255}}, {how}"] = (False, resize(masks * 255, how))
    return out


def q4_bce_targets() -> None:
    targets = {d: binary_targets(t) for d, t in DTYPES.items()}
    overshoot, undershoot = 0.0, math.inf
    rows: list[list[object]] = []
    for name, (correct, _) in targets["float32"].items():
        cells: list[object] = [name, "correct" if correct else "misuse"]
        for dname in DTYPES:
            v = targets[dname][name][1]
            if isinstance(v, str):
                cells.append(v)
                continue
            lo, hi = float(v.float().amin()), float(v.float().amax())
            outside = max(-lo, hi - 1, 0.0)
            if correct:
                overshoot = max(overshoot, outside)
            else:
                undershoot = min(undershoot, outside)
            cells.append(f"{fmt(lo)}..{fmt(hi)}")
        rows.append(cells)
    show(
        "4. binary_cross_entropy_with_logits targets: range of values per dtype",
        ["target", "kind", *DTYPES],
        rows,
        [
            "an ignore label (255, -1) beside {0, 1} is correct where the call's weight is 0 there,"
            " or reduction='none' is masked after",
        ],
    )
    print(
        f"  verdict: correct targets leave [0, 1] by at most {overshoot:.3g} (bicubic overshoot);"
        f" misuse by at least {undershoot:.3g}"
    )


def q5_bce_raises() -> None:
    cases = {
        "input 1.5": (1.5, 1.0),
        "input -0.5": (-0.5, 1.0),
        "input NaN": (math.nan, 1.0),
        "input exactly 0 (log clamped)": (0.0, 1.0),
        "target 1.5": (0.5, 1.5),
        "target -1": (0.5, -1.0),
        "target 255": (0.5, 255.0),
        "target NaN": (0.5, math.nan),
    }
    rows: list[list[object]] = []
    messages: set[str] = set()
    for name, (bad_input, bad_target) in cases.items():
        for reduction in ("mean", "none"):
            cells: list[object] = [name, reduction]
            for dtype in DTYPES.values():
                x = torch.tensor([0.3, bad_input, 0.6], dtype=dtype)
                y = torch.tensor([1.0, bad_target, 0.0], dtype=dtype)
                try:
                    loss = F.binary_cross_entropy(x, y, reduction=reduction)
                    cells.append(f"returns {fmt(float(loss.float().sum()))}")
                except RuntimeError as error:
                    messages.add(str(error).splitlines()[0])
                    cells.append(f"raises RuntimeError ({str(error).split()[3]})")
            rows.append(cells)
    show(
        f"5. F.binary_cross_entropy on torch {torch.__version__} (CPU): what torch raises on",
        ["case", "reduction", *DTYPES],
        rows,
        [*(f"message: {m!r}" for m in sorted(messages)), "other versions and CUDA: not measured"],
    )


def soft_targets(classes: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Soft targets over ``classes`` computed in ``dtype`` (one batch each, same seed)."""
    torch.manual_seed(classes)
    count = max(8, (1 << 21) // classes)
    logits = 3 * torch.randn(count, classes)
    first = F.one_hot(torch.randint(classes, (count,)), classes).to(dtype)
    second = F.one_hot(torch.randint(classes, (count,)), classes).to(dtype)
    lam = torch.distributions.Beta(0.2, 0.2).sample((count, 1)).to(dtype)
    area = torch.rand(count, 1).to(dtype)
    teacher = F.softmax(logits.to(dtype), 1)
    other = F.softmax(logits.flip(0).to(dtype), 1)
    smooth_first, smooth_second = first * 0.9 + 0.1 / classes, second * 0.9 + 0.1 / classes
    half_teacher = F.softmax(logits.bfloat16(), 1).float()
    labels = torch.randint(2, 6, (count, 1))
    return {
        "teacher softmax": teacher,
        "teacher softmax T=4, f32 then cast": F.softmax(logits / 4, 1).to(dtype),
        "label smoothing 0.1": smooth_first,
        "mixup of smoothed labels": lam * smooth_first + (1 - lam) * smooth_second,
        "cutmix (area-weighted)": area * first + (1 - area) * second,
        "mixup of teacher softmaxes": lam * teacher + (1 - lam) * other,
        "bf16 teacher, mixup in f32, cast": (
            lam.float() * half_teacher + (1 - lam.float()) * half_teacher.flip(0)
        ).to(dtype),
        "multi-hot, 2-5 labels (misuse)": (torch.rand(count, classes).argsort(1) < labels).to(
            dtype
        ),
    }


def q6_soft_targets() -> None:
    rows: list[list[object]] = []
    worst: dict[str, float] = dict.fromkeys(DTYPES, 0.0)
    least_misuse = math.inf
    for classes in (10, 1000, 32000, 152064):
        sums = {
            d: {k: v.float().sum(1) for k, v in soft_targets(classes, t).items()}
            for d, t in DTYPES.items()
        }
        for name in sums["float32"]:
            cells: list[object] = [name, classes]
            for dname in DTYPES:
                total = sums[dname][name]
                if "misuse" in name:
                    least_misuse = min(least_misuse, float(total.min()) - 1)
                    cells.append(f"min sum {fmt(float(total.min()))}")
                else:
                    off = float((total - 1).abs().max())
                    worst[dname] = max(worst[dname], off)
                    cells.append(off)
            rows.append(cells)
    show(
        "6. cross_entropy soft targets computed in each dtype: max |row sum - 1| (float32 sums)",
        ["target", "C", *DTYPES],
        rows,
        [
            f"tolerances: {', '.join(f'{d} {norm_tolerance(d):g}' for d in DTYPES)} (a float32"
            " tensor whose values all lie on a half grid gets the half one)",
            "'bf16 teacher, mixup in f32': off the bfloat16 grid, so read with float32's"
            " tolerance even though its error is bfloat16's",
        ],
    )
    print(
        "  verdict: correct rows off by at most "
        + ", ".join(f"{d} {v:.3g}" for d, v in worst.items())
        + f"; multi-hot rows exceed 1 by at least {least_misuse:.3g}"
    )


QUESTIONS = {
    "1": lambda: q1_cross_entropy_input(),
    "2": lambda: q2_nll_input(),
    "3": lambda: q3_sigmoid_into_bce_with_logits(),
    "4": lambda: q4_bce_targets(),
    "5": lambda: q5_bce_raises(),
    "6": lambda: q6_soft_targets(),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="*", choices=[*QUESTIONS, []], help="default: all")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"torch {torch.__version__}; tolerances and rows per check from kl_guard")
    with torch.no_grad():
        for number in args.questions or QUESTIONS:
            torch.manual_seed(int(number))
            began = time.perf_counter()
            QUESTIONS[number]()
            print(f"  ({time.perf_counter() - began:.1f} s)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
