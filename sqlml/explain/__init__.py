"""Why a model predicts what it does: exact per-row contributions (TreeSHAP, linear) and importance."""
