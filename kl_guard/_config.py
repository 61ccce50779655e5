"""Configuration: one frozen dataclass, validated once, never edited in place."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypedDict

from kl_guard._contract import CONTRACTS
from kl_guard._findings import CODES, OPT_IN

ENV_MODE = "KL_GUARD_MODE"
#: In ``select`` or ``ignore``: every code.
ALL = "ALL"
#: In ``select`` or ``ignore``: a loss's name, for every code of that loss.
_LOSS_CODES = {contract.name: contract.codes for contract in CONTRACTS}


class Mode(str, enum.Enum):
    """What kl_guard does with a finding."""

    WARN = "warn"
    RAISE = "raise"
    LOG = "log"
    OFF = "off"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings of one layer (``install()`` or a ``guard()``).

    ``check_every=None`` is the default policy: the first ``warmup`` calls at
    every call site are checked, then the gap between checks doubles up to
    ``max_interval`` calls. ``check_every=N`` checks the first call and every
    N-th call after it at each call site. Under ``torch.distributed``,
    warnings and log lines come from rank 0 only unless ``all_ranks``.
    """

    mode: Mode = Mode.WARN
    check_every: int | None = None
    warmup: int = 8
    max_interval: int = 1024
    sample_rows: int = 32
    select: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    all_ranks: bool = False

    def reports_on(self, rank: int | None) -> bool:
        """Whether a finding seen on ``rank`` is warned or logged (every rank records it)."""
        return self.all_ranks or rank is None or rank == 0

    def enabled(self, code: str) -> bool:
        """Whether ``code`` is reported: ``select`` is the exact set when given;
        without it, every code but the opt-in ones (:data:`OPT_IN`)."""
        if code in self.ignore:
            return False
        if self.select is None:
            return code not in OPT_IN
        return code in self.select


class Options(TypedDict, total=False):
    """The keyword options of ``install()`` and ``guard()``, each as in :class:`Config`.

    An option left out keeps the value of the enclosing ``install()`` or
    guard (``install()`` called again keeps its own), else :class:`Config`'s default.
    """

    check_every: int | None  # check every N-th call per call site; None: the default policy
    warmup: int  # calls checked first at every call site (8)
    max_interval: int  # the widest gap between checks of the default policy (1024)
    sample_rows: int  # rows read per check along the class dim (32)
    select: str | Iterable[str] | None  # report only these codes (KLG008 only when named)
    ignore: str | Iterable[str] | None  # never report these codes
    all_ranks: bool  # warn and log on every torch.distributed rank, not rank 0 only


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(Config) if field.name != "mode")


def _choices(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in values)


def parse_mode(
    value: object, *, source: str = "mode", choices: Collection[Mode] = tuple(Mode)
) -> Mode:
    """Turn ``"warn"`` (or a :class:`Mode`) into one of ``choices``, listing them on error."""
    if isinstance(value, Mode):
        mode: Mode | None = value
    else:
        text = value.strip().lower() if isinstance(value, str) else None
        mode = next((m for m in Mode if m.value == text), None)
    if mode is not None and mode in choices:
        return mode
    raise ValueError(
        f"kl_guard: {source} must be one of {_choices(m.value for m in choices)}, not {value!r}."
    )


def parse_codes(value: object, *, option: str) -> frozenset[str]:
    """Accept ``"KLG001,KLG003"`` or any iterable of codes; reject unknown codes.

    ``"ALL"`` stands for every code, the opt-in ones included (as in ruff); a
    loss's name (``"cross_entropy"``) for every code of that loss, so that
    ``ignore="cross_entropy,nll_loss,binary_cross_entropy_with_logits"`` keeps
    kl_guard to KL alone.
    """
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise TypeError(
            f"kl_guard: {option} must be a comma-separated string or an iterable "
            f"of codes, not {type(value).__name__}."
        )
    codes: set[str] = set()
    for item in items:
        code = item.strip().upper() if isinstance(item, str) else item
        if code == ALL:
            codes.update(CODES)
        elif isinstance(item, str) and item.strip().lower() in _LOSS_CODES:
            codes.update(_LOSS_CODES[item.strip().lower()])
        elif code in CODES:
            codes.add(code)
        else:
            raise ValueError(
                f"kl_guard: unknown code {item!r} in {option}; "
                f"valid codes are {_choices(CODES)}, or {ALL!r}, or a loss's name: "
                f"{_choices(_LOSS_CODES)}."
            )
    return frozenset(codes)


def _positive_int(value: object, *, option: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise TypeError(
            f"kl_guard: {option} must be {expected}, not {type(value).__name__} {value!r}."
        )
    if value < 1:
        raise ValueError(f"kl_guard: {option} must be >= 1, not {value}.")
    return value


def configure(base: Config, mode: object = None, **options: Any) -> Config:
    """Return ``base`` with ``mode`` and ``options`` applied, validating every value.

    Errors are raised here, at configuration time, so a bad setting never
    surfaces in the middle of a training run.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"kl_guard: unknown option {unknown[0]!r}; "
            f"valid options are 'mode', {_choices(OPTION_NAMES)}."
        )
    changes: dict[str, Any] = {}
    if mode is not None:
        changes["mode"] = parse_mode(mode)
    for name in ("warmup", "max_interval", "sample_rows"):
        if name in options:
            changes[name] = _positive_int(options[name], option=name)
    if "check_every" in options:
        changes["check_every"] = _positive_int(
            options["check_every"], option="check_every", allow_none=True
        )
    if "select" in options:
        select = options["select"]
        changes["select"] = None if select is None else parse_codes(select, option="select")
    if "ignore" in options:
        ignore = options["ignore"]
        changes["ignore"] = frozenset() if ignore is None else parse_codes(ignore, option="ignore")
    if "all_ranks" in options:
        all_ranks = options["all_ranks"]
        if not isinstance(all_ranks, bool):
            raise TypeError(
                f"kl_guard: all_ranks must be True or False, "
                f"not {type(all_ranks).__name__} {all_ranks!r}."
            )
        changes["all_ranks"] = all_ranks
    return dataclasses.replace(base, **changes)


def default_config(environ: Mapping[str, str] | None = None) -> Config:
    """The configuration before any option: ``KL_GUARD_MODE`` sets the mode."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_MODE, "").strip()
    if not raw:
        return Config()
    return Config(mode=parse_mode(raw, source=f"the environment variable {ENV_MODE}"))
