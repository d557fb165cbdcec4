"""Floor 2 (beside the runner): one champion per spec, dethroned only by statistical evidence.

* ``arena.champions.stats`` — pure: the statistics every verdict and table uses (t-test, intervals, σ).
* ``arena.champions.familywise`` — pure: the tournament decision. Challengers are selected on the tournament seeds
  and confirmed on fresh seeds (fixed-sequence testing, or Holm), so P(any false promotion) ≤ α per tournament.
* ``arena.champions.policy`` — pure: ``PolicySettings``, δ = max(margin, σ), the failed-seed penalty, and the single
  sequential contest (``evaluate``, ``run_contest``, ``looks``) that the family-wise rule replaced for decisions.
  See docs/champion-policy.md.
* ``arena.champions.registry`` — the store side: settings, the current champion, decisions with their evidence,
  champion artifacts. It runs nothing: ``arena.orchestration.contest`` runs contests.

Importing this package imports no submodule (no side effects at import).
"""
