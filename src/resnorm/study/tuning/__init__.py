"""The tuning room: a plan's `tune:` phase, before the final runs.

phase (trial jobs per (run, lr, seed) into STUDY/tuning/, the choice into the final runs) |
results (STUDY/tuning as data: trial scores, the choice, tuning.json, expected max).
"""
