"""The execution room: how a study's jobs train, wherever they train.

executors (the one Executor interface, in-process) | pool (PoolExecutor: --jobs K worker
processes) | slurm, slurm_queue (SlurmExecutor via submitit; task states) | job (one (run, seed):
Job, train_one, train_locked, Outcome) | make_jobs (every (run, seed) as a Job; --shard) |
locks (a lock per run folder) | capacity (--jobs auto) | state (study.json, OutcomeRecorder) |
records (the study folder as data: RunRecord, collect_runs).
"""
