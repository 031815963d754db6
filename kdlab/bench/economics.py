"""Break-even and sweep saving of the augmentation view cache, from measured per-image costs.

With ``t_T`` the teacher's forward time per image, ``t_on`` the logit-KD step time per image
with the online teacher and ``t_c`` with the view cache (all measured, device pipeline, eager),
and ``V = 162`` views per image:

- precompute per image: ``V · t_T``; in student-epochs: ``V · t_T / t_on``;
- break-even: the cache pays for itself after ``E* = V · t_T / (t_on − t_c)`` student epochs;
- sweep of ``E`` student-epochs sharing one teacher cache: time with the cache relative to
  without is ``(E · t_c + V · t_T) / (E · t_on)``; the saving is one minus that.

The capacity-gap study's R50→R18 logit-KD arm is 9 (α, T) × 3 seeds × 100 epochs = 2,700
student-epochs on one R50 cache (its R50→R34 arm would reuse the same cache; its student cost
is not measured here, so it is not included).
"""

from __future__ import annotations

from kdlab.teachers.cache import num_views

SWEEP_STUDENT_EPOCHS = 9 * 3 * 100  # R50→R18 logit KD: α×T grid × seeds × epochs


def view_cache_economics(rows: list[dict], sweep_epochs: int = SWEEP_STUDENT_EPOCHS) -> dict:
    """The formulas above on the benchmark's rows (empty values when a row was skipped)."""
    rate = {r["name"]: r.get("images_per_s") for r in rows if not r.get("skipped")}
    need = ("teacher_forward", "step/logit/device/eager", "step/logit_viewcache/device/eager")
    if not all(rate.get(k) for k in need):
        return {"note": "rows missing; nothing computed"}
    v = num_views(4)
    t_t, t_on, t_c = (1.0 / rate[k] for k in need)
    gain = t_on - t_c
    rel = (sweep_epochs * t_c + v * t_t) / (sweep_epochs * t_on)
    return {
        "views_per_image": v,
        "teacher_s_per_image": t_t,
        "online_step_s_per_image": t_on,
        "cached_step_s_per_image": t_c,
        "precompute_student_epochs": v * t_t / t_on,
        "break_even_epochs": v * t_t / gain if gain > 0 else None,
        "sweep_student_epochs": sweep_epochs,
        "sweep_time_with_cache_relative": rel,
        "sweep_saving_fraction": 1.0 - rel,
        "formula": "break_even = 162·t_T/(t_on − t_c); sweep = (E·t_c + 162·t_T)/(E·t_on)",
    }
