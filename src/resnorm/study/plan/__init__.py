"""The plan room: what a study is, before anything trains.

parse (the YAML plan: Plan, RunSpec, load_plan, the lr rule) | design (the plan's `design:`
checked, or the assignment's derived) | manifest (Design, Manifest in study.json) | options
(StudyOptions: what the command line sets beside the plan) | tune_settings (the `tune:` section).
"""
