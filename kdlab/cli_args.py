"""The command line of ``python -m kdlab.train`` before Hydra parses it.

Two conveniences that Hydra's own grammar does not offer: ``-m`` anywhere among the overrides,
and the short names ``alpha=``/``temperature=``/``beta=`` for the method's settings, which live
under ``distill.*`` (``alpha=0.9`` is ``distill.alpha=0.9``, also in sweeps: ``-m alpha=0.3,0.5``).
"""

from __future__ import annotations

import re

SHORTHANDS = ("alpha", "temperature", "beta")  # the distill.* settings with a top-level alias
_SHORTHAND = re.compile(rf"^\+{{0,2}}({'|'.join(SHORTHANDS)})=(.*)$", re.DOTALL)


def hoist_flags(argv: list[str]) -> list[str]:
    """Move Hydra's ``-m``/``--multirun`` in front of the overrides.

    argparse stops collecting overrides at a flag, so ``+experiment=X -m seed=0,1`` would reject
    ``seed=0,1``; the documented form puts ``-m`` after the experiment, so accept it anywhere.
    """
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    rest = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    return argv[:1] + flags + rest


def expand_shorthands(overrides: list[str]) -> list[str]:
    """``alpha=0.9`` → ``++distill.alpha=0.9`` (and ``temperature=``, ``beta=``).

    ``++`` sets the key whether or not the chosen method has it: a method that does not read
    it (``distill=dkd alpha=0.9``) then gets a warning and runs without it, and a run without
    distillation is refused with a message naming the setting (``kdlab.checks``).
    """
    out = []
    for arg in overrides:
        match = _SHORTHAND.match(arg)
        out.append(f"++distill.{match[1]}={match[2]}" if match else arg)
    return out


def command_line(argv: list[str]) -> list[str]:
    """``sys.argv`` as Hydra should read it."""
    return [argv[0], *expand_shorthands(hoist_flags(argv)[1:])]
