"""Call sites: each line of the user's keeps its own schedule, and new code starts afresh."""

from __future__ import annotations

import torch.nn.functional as F

import kl_guard
from helpers import active_view, logits

GOOD = "F.kl_div(log_p, q, reduction='batchmean')"
MISUSE = "F.kl_div(p, q, reduction='batchmean')"  # probabilities as the input


def cell_namespace() -> dict[str, object]:
    s, t = logits(8, 5), logits(8, 5, seed=1)
    return {"F": F, "log_p": F.log_softmax(s, 1), "p": F.softmax(s, 1), "q": F.softmax(t, 1)}


def run_cell(source: str, times: int, namespace: dict[str, object]) -> None:
    """A notebook cell run once: its code compiled afresh, then freed."""
    code = compile(f"for _ in range({times}):\n    {source}\n", "<cell>", "exec")
    exec(code, namespace)
    del code


def test_every_regenerated_misuse_is_reported() -> None:
    """A cell re-run after an edit gets a new code object, which may get the
    id of the freed one: it must not inherit that one's schedule."""
    namespace = cell_namespace()
    kl_guard.install(mode="log")
    generations = 300
    for _ in range(generations):
        run_cell(GOOD, 40, namespace)
        run_cell(MISUSE, 3, namespace)
    [finding] = [f for f in kl_guard.findings() if f.code == "KLG003"]
    assert finding.location == "<cell>:2"
    assert finding.count == generations * 3  # each misused generation: all 3 calls checked


def test_sites_stay_bounded_over_thousands_of_generations() -> None:
    namespace = cell_namespace()
    kl_guard.install(mode="log", check_every=1000)
    policy = active_view().schedule.policy
    for _ in range(10_000):
        run_cell(GOOD, 1, namespace)
    assert len(policy) <= policy.LIMIT
    assert kl_guard.findings() == []
