"""Floor 3: what a user asks for, built from the runner, the store and the champion policy.

``entries`` (who competes), ``specs`` (the spec the flags describe), ``execute`` (plan and run jobs, record results),
``contest`` (champion contests), ``leaderboard`` (the board of one spec), ``search`` (Optuna), ``dashboard``.
"""
