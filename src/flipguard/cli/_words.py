"""Library error messages in the user's words: Python parameter names become the CLI's flags.

The library speaks Python (``The 'rate' parameter of RandomFlip must be ...``,
``holdout_size must be in (0, 1)``), which is right for library users.  The
error boundary in :func:`flipguard.cli.main` passes every message through
:func:`in_user_words` with the command being run, so a CLI user reads
``--rate must be ...`` instead.  Unknown names are left alone.
"""

from __future__ import annotations

import re

__all__ = ["FLAGS", "in_user_words"]

#: Python name -> CLI flag, per command ("*": every command).
FLAGS: dict[str, dict[str, str]] = {
    "*": {"random_state": "--seed", "n_jobs": "--n-jobs", "force": "--force"},
    "attack": {"rate": "--rate", "n_flips": "--n-flips", "model": "--surrogate", "source": "--source",
               "target": "--target", "mode": "--mode", "n_clusters": "--n-clusters", "kind": "--kind",
               "pairs": "--pairs"},
    "assess": {"holdout_size": "--holdout", "validation_size": "--validation", "rates": "--rates",
               "strategies": "--strategies", "models": "--model", "mitigate": "--mitigate",
               "seeds": "--seeds", "attack_params": "--strategies"},
    "audit": {"trusted": "--trusted", "TrustedModel": "--method trusted", "cv": "--cv", "model": "--model"},
    "clean": {"trusted": "--trusted", "model": "--model", "mode": "--mode"},
    "certify": {"n_partitions": "--partitions", "model": "--model"},
    "keygen": {},
}

_SKLEARN = re.compile(r"The '(\w+)' parameter of \w+ must be (.*?)\.? Got (.*?) instead\.?$")
_PY_ASSIGN = re.compile(r"\s*\((\w+)=[^)]*\)")
_NO_PARAM = re.compile(r"has no parameter\(s\) ([\w, ]+); it takes ([\w, ]+|none)\.")


def in_user_words(message: str, command: str | None) -> str:
    """``message`` with the Python names of ``command``'s parameters replaced by its flags."""
    flags = {**FLAGS["*"], **FLAGS.get(command or "", {})}
    original = message

    def flag(name: str) -> str | None:
        return flags.get(name)

    m = _SKLEARN.search(message)
    if m and flag(m.group(1)):
        message = message[:m.start()] + f"{flag(m.group(1))} must be {m.group(2)}; got {m.group(3)}"

    def assign(m: re.Match) -> str:
        f = flag(m.group(1))
        if f is None:
            return m.group(0)
        return "" if f in message else f" ({f})"

    message = _PY_ASSIGN.sub(assign, message)

    def no_param(m: re.Match) -> str:
        given = [flag(n.strip()) or n.strip() for n in m.group(1).split(",")]
        takes = [flag(n.strip()) or n.strip() for n in m.group(2).split(",") if n.strip() != "none"]
        takes = [t for t in takes if t.startswith("--")] or ["no strategy options"]
        return f"does not take {', '.join(given)}; it takes {', '.join(sorted(set(takes)))}."

    message = _NO_PARAM.sub(no_param, message)
    # A bare Python name before "must"/"needs"/"should" (one pass, so a flag is never rewritten).
    names = "|".join(re.escape(n) for n in sorted(flags, key=len, reverse=True))
    message = re.sub(rf"(?<![\w'-])({names})(?= (must|needs|should) )", lambda m: flags[m.group(1)], message)
    # A Python name given a number in running text: "holdout_size=0.99" -> "--holdout 0.99".
    message = re.sub(rf"(?<![\w'(-])({names})=([-+]?[\d.][^\s,;)]*)", lambda m: f"{flags[m.group(1)]} {m.group(2)}",
                     message)
    if message != original:
        message = re.sub(r"\. Got (.*) instead\.?$", r"; got \1", message)
    return message
