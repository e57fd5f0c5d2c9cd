"""What every check gives: a status and a :class:`Check`. The subject modules and the
orchestration in ``__init__`` all build on this one, so it depends on none of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """One finding: ``detail`` says what was found, ``hint`` what to do about it."""

    name: str
    status: str
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)
