"""The descent engine: one loop for every run, its stop rules, schedules, step-size advice and
checkpoints. Imports torch; yields records and never prints."""
