"""Champions: one champion per spec, dethroned only by statistical evidence.

* ``arena.champions.policy`` — pure: ``PolicySettings``, ``Verdict``, ``evaluate`` (one look), ``run_contest`` (the
  sequential contest, seed by seed), ``first_champion``, ``noise_floor``, ``looks``. A one-sided paired t-test with
  α split over a fixed look schedule (Bonferroni), δ = max(margin, σ), futility after 3 seeds.
  See docs/champion-policy.md.
* ``arena.champions.registry`` — wiring: runs contests through the runner and the store, keeps champion artifacts.

Importing this package imports neither submodule (no side effects at import).
"""
