"""Tables, statistics, figures and pages made from every run's per-case metrics (and saved predictions)."""
