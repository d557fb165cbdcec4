"""Floor 2 (beside the runner): one champion per spec, dethroned only by statistical evidence.

* ``arena.champions.stats`` — pure: the statistics every verdict and table uses (t-test, intervals, σ).
* ``arena.champions.policy`` — pure: ``PolicySettings``, ``Verdict``, ``evaluate`` (one look), ``run_contest`` (the
  sequential contest, seed by seed), ``first_champion``, ``looks``. A one-sided paired t-test with α split over a
  fixed look schedule (Bonferroni), δ = max(margin, σ), futility after 3 seeds. See docs/champion-policy.md.
* ``arena.champions.registry`` — the store side: settings, the current champion, decisions with their evidence,
  champion artifacts. It runs nothing: ``arena.orchestration.contest`` runs contests.

Importing this package imports no submodule (no side effects at import).
"""
