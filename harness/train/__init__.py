"""Training one run, or one stage of it: the loop, optimisation and precision, seeding and the run folder's files."""
