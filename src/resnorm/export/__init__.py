"""Exporting a study to where users already look: MLflow (`resnorm export STUDY --mlflow URI`).

Nothing is re-exported here: importing the package must not import mlflow, which is optional
(`pip install 'resnorm[mlflow]'`) and imported only when an export runs.
"""
