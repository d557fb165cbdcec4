"""The hyperparameter search (Optuna): storage, study bookkeeping, the optimizing processes, adoption."""
