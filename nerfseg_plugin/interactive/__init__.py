"""Click-to-correct: regions around a click, the on-disk corrections store, live application and simulated clicks."""
