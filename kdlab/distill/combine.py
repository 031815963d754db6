"""Several losses with independent weights: ``L = Σ_k w_k · L_k``.

The published CIFAR-100 benchmark runs combine cross-entropy, logit KD and a feature method,
each with its own weight (e.g. CE 1 + 0.8·CRD, or CE 0.1 + KD 0.9). Here each term is an
ordinary ``KDLoss`` built from config and the combination only weighs them, so a method's config
says how it is combined and its loss module stays about the method alone.

Logged parts: each term's total as ``<name>`` (``train/loss_<name>``), and its other parts as
``<name>_<part>`` (``train/loss_crd_…``), except the ``ce``/``kd`` parts that every logit loss
reports: in a combination those are terms of their own. A term whose weight is 0 is not run.
The supervised part (``TASK``) of the combination is the weighted sum of its terms' own.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from kdlab.distill.base import TASK, KDLoss, validate_weight


class Combined(KDLoss):
    """Weighted sum of named losses.

    Args:
        terms: name → loss (e.g. ``{"ce": CrossEntropy(), "crd": CRD(...)}``).
        weights: name → weight ≥ 0, one per term.
    """

    short_names = {"weights": "w"}

    def __init__(self, terms: Mapping[str, KDLoss], weights: Mapping[str, float]) -> None:
        super().__init__()
        terms, weights = dict(terms), dict(weights)
        if not terms:
            raise ValueError("a combined loss needs at least one term")
        if set(terms) != set(weights):
            raise ValueError(
                f"every term needs a weight and every weight a term: terms {sorted(terms)}, "
                f"weights {sorted(weights)}"
            )
        bad = [n for n, t in terms.items() if not isinstance(t, KDLoss)]
        if bad:
            raise ValueError(f"terms {bad} are not kdlab losses (KDLoss subclasses)")
        self.terms = nn.ModuleDict(terms)
        self.weights = {n: validate_weight(f"weights.{n}", w) for n, w in weights.items()}
        self._set_sides(terms.values())
        self._set_extras()

    def _set_sides(self, terms) -> None:
        """Pre-activation features per side: the feature terms must agree (checked when built
        and again once ``bind`` has told each term its stages, which may set its flags)."""
        features = [t for t in terms if t.uses_features or t.student_preact or t.teacher_preact]
        for side in ("student_preact", "teacher_preact"):
            kinds = {getattr(t, side) for t in features}
            if len(kinds) > 1:
                raise ValueError(
                    f"the feature terms of one combination disagree on {side}: all of them must "
                    "read pre-activation features of that side, or none"
                )
            setattr(self, side, kinds.pop() if kinds else False)

    def _set_extras(self) -> None:
        """The combination needs a strong view / the networks when an active term does."""
        active = self._active().values()
        self.needs_strong_view = any(t.needs_strong_view for t in active)
        self.needs_networks = any(t.needs_networks for t in active)

    def _active(self) -> dict[str, KDLoss]:
        return {n: t for n, t in self.terms.items() if self.weights[n] > 0}

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for term in self.terms.values():
            term.bind(student, teacher)
        pairs = [p for t in self._active().values() for p in t.stage_pairs]
        self.stage_pairs = tuple(dict.fromkeys(pairs))
        self._set_sides(self._active().values())
        self._set_extras()

    def bind_data(self, labels: Tensor) -> None:
        for term in self.terms.values():
            term.bind_data(labels)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for term in self.terms.values():
            term.set_epoch(epoch)

    def forward(
        self,
        s_logits: Tensor,
        t_logits: Tensor | None,
        targets: Tensor,
        s_feats: dict[str, Tensor] | None = None,
        t_feats: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
        **extra,
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total = task = None
        for name, term in self._active().items():
            own = {k: v for k, v in extra.items() if k in term.extra_inputs()}
            parts = term(s_logits, t_logits, targets, s_feats, t_feats, index=index, **own)
            weighted = parts["loss"] * self.weights[name]
            total = weighted if total is None else total + weighted
            if TASK in parts:
                own = parts[TASK] * self.weights[name]
                task = own if task is None else task + own
            out[name] = parts["loss"].detach()
            for part, value in parts.items():
                if part not in ("loss", "ce", "kd", TASK) and part != name:
                    out[f"{name}_{part}"] = value.detach()
        if total is None:  # every weight is 0: nothing to train on, but keep the graph valid
            total = s_logits.sum() * 0.0
        return {"loss": total, **out} | ({TASK: task} if task is not None else {})

    def extra_repr(self) -> str:
        return ", ".join(f"{n}×{w:g}" for n, w in self.weights.items())
